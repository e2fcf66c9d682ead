"""The MCP floor: a minimal MCPServer with one trivial async tool, to measure a bare stdio round trip."""

from mcp.server import MCPServer

server = MCPServer("echo")


@server.tool()
async def echo(text: str) -> str:
    return text


if __name__ == "__main__":
    server.run()
