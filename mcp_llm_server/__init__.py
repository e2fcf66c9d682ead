"""mcp-llm-server: ask OpenAI and Anthropic models from any MCP host."""

__version__ = "0.1.0"
