"""Files as context: read inside the allowed roots and sent labelled with their path; everything else refused first."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

# Imported up front so the server's lazy SDK import costs nothing inside the calls.
import anthropic  # noqa: F401
import openai  # noqa: F401
import pytest
from conftest import SettingsFactory, text_of
from helpers import connect, ok
from helpers import refused_files as refused

from mcp_llm_server._standin import Reply, StandIn

pytestmark = pytest.mark.anyio


@pytest.fixture
def root(tmp_path: Path) -> Path:
    """An allowed root with a text file in a subdirectory, and a file outside it."""
    root = tmp_path / "root"
    (root / "src").mkdir(parents=True)
    (root / "src" / "app.py").write_text("def main():\n    return 42\n")
    (root / "README.md").write_text("# Project\n")
    (tmp_path / "outside.txt").write_text("not for the model\n")
    return root


async def test_files_reach_the_request_labelled_with_their_path(
    make_settings: SettingsFactory, standin: StandIn, root: Path
) -> None:
    """Files inside the root are sent before the prompt, each labelled with the path given (relative or absolute)."""
    async with connect(make_settings(file_roots=[str(root)])) as client:
        ok(await client.call_tool("ask_openai", {"prompt": "Review", "files": ["src/app.py", str(root / "README.md")]}))
    content = standin.requests[0].body["input"][0]["content"]
    app = '<file path="src/app.py">\ndef main():\n    return 42\n\n</file>'
    readme = f'<file path="{root / "README.md"}">\n# Project\n\n</file>'
    assert content == f"{app}\n\n{readme}\n\nReview"


async def test_anthropic_files_in_a_cached_prefix(make_settings: SettingsFactory, standin: StandIn, root: Path) -> None:
    """On Anthropic each file is its own block, the last one marked cache_control; the prompt follows unmarked."""
    async with connect(make_settings(file_roots=[str(root)])) as client:
        ok(await client.call_tool("ask_claude", {"prompt": "Review", "files": ["src/app.py", "README.md"]}))
    blocks = standin.requests[0].body["messages"][0]["content"]
    assert [b["text"].split("\n")[0] for b in blocks] == [
        '<file path="src/app.py">',
        '<file path="README.md">',
        "Review",
    ]
    assert [b.get("cache_control") for b in blocks] == [None, {"type": "ephemeral"}, None]


async def test_files_are_kept_with_the_conversation(
    make_settings: SettingsFactory, standin: StandIn, root: Path
) -> None:
    """A turn's files are stored (path and digest shown) and sent again, as they were, when the conversation goes on."""
    async with connect(make_settings(file_roots=[str(root)])) as client:
        first = ok(await client.call_tool("ask_claude", {"prompt": "Review", "files": ["src/app.py"]}))
        (root / "src" / "app.py").write_text("changed since\n")
        args = {"prompt": "And now?", "conversation_id": first["conversation_id"]}
        ok(await client.call_tool("ask_openai", args))
        detail = ok(await client.call_tool("get_conversation", {"conversation_id": first["conversation_id"]}))
    files = detail["turns"][0]["files"]
    assert files[0]["path"] == "src/app.py" and len(files[0]["sha256"]) == 64
    history = standin.requests[1].body["input"][0]["content"]
    assert "return 42" in history and "changed since" not in history


async def test_outside_the_roots_refused(make_settings: SettingsFactory, standin: StandIn, root: Path) -> None:
    """An absolute path outside every root is refused."""
    message = await refused(make_settings, standin, [str(root.parent / "outside.txt")], file_roots=[str(root)])
    assert "outside the allowed roots" in message


async def test_dotdot_refused(make_settings: SettingsFactory, standin: StandIn, root: Path) -> None:
    """`..` that climbs out of the root is refused (checked after resolving)."""
    message = await refused(make_settings, standin, ["src/../../outside.txt"], file_roots=[str(root)])
    assert "outside the allowed roots" in message


async def test_symlink_escape_refused(make_settings: SettingsFactory, standin: StandIn, root: Path) -> None:
    """A symlink inside the root that points outside it is refused."""
    (root / "innocent.txt").symlink_to(root.parent / "outside.txt")
    message = await refused(make_settings, standin, ["innocent.txt"], file_roots=[str(root)])
    assert "outside the allowed roots" in message


@pytest.mark.parametrize("name", [".env", ".env.local", "server.pem", "tls.key", "id_rsa", "id_rsa.pub", "cert.p12"])
async def test_secret_looking_names_refused(
    make_settings: SettingsFactory, standin: StandIn, root: Path, name: str
) -> None:
    """Names that look like secrets are refused, unless MCP_LLM_ALLOW_SECRET_FILES is set."""
    (root / name).write_text("SECRET=1\n")
    message = await refused(make_settings, standin, [name], file_roots=[str(root)])
    assert "looks like a secret" in message and "SECRET=1" not in message
    async with connect(make_settings(file_roots=[str(root)], allow_secret_files=True)) as client:
        ok(await client.call_tool("ask_openai", {"prompt": "Review", "files": [name]}))
    assert "SECRET=1" in json.dumps(standin.requests[0].body)


async def test_symlink_to_a_secret_refused(make_settings: SettingsFactory, standin: StandIn, root: Path) -> None:
    """A harmless name that resolves to a secret-looking file is refused too."""
    (root / ".env").write_text("KEY=1\n")
    (root / "notes.txt").symlink_to(root / ".env")
    assert "looks like a secret" in await refused(make_settings, standin, ["notes.txt"], file_roots=[str(root)])


@pytest.mark.parametrize("data", [b"PNG\x00\x01\x02", b"caf\xe9 latin-1"])
async def test_binary_refused(make_settings: SettingsFactory, standin: StandIn, root: Path, data: bytes) -> None:
    """A file with NUL bytes, or not UTF-8, is refused."""
    (root / "blob.bin").write_bytes(data)
    message = await refused(make_settings, standin, ["blob.bin"], file_roots=[str(root)])
    assert "binary" in message or "not UTF-8" in message


async def test_file_over_the_cap_refused(make_settings: SettingsFactory, standin: StandIn, root: Path) -> None:
    """A file over MCP_LLM_MAX_FILE_BYTES is refused."""
    (root / "big.txt").write_text("x" * 101)
    message = await refused(make_settings, standin, ["big.txt"], file_roots=[str(root)], max_file_bytes=100)
    assert "MCP_LLM_MAX_FILE_BYTES" in message


async def test_total_over_the_cap_refused(make_settings: SettingsFactory, standin: StandIn, root: Path) -> None:
    """Files that are each under the cap but together over MCP_LLM_MAX_FILES_TOTAL_BYTES are refused."""
    (root / "a.txt").write_text("a" * 60)
    (root / "b.txt").write_text("b" * 60)
    message = await refused(
        make_settings,
        standin,
        ["a.txt", "b.txt"],
        file_roots=[str(root)],
        max_file_bytes=100,
        max_files_total_bytes=100,
    )
    assert "MCP_LLM_MAX_FILES_TOTAL_BYTES" in message


async def test_missing_file_and_directory_refused(make_settings: SettingsFactory, standin: StandIn, root: Path) -> None:
    """A path that does not exist, or is a directory, is refused with a message that says so."""
    assert "does not exist" in await refused(make_settings, standin, ["nope.txt"], file_roots=[str(root)])
    assert "not a regular file" in await refused(make_settings, standin, ["src"], file_roots=[str(root)])


async def test_no_root_without_configuration(
    make_settings: SettingsFactory, standin: StandIn, root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Without MCP_LLM_FILE_ROOTS (nor client roots) the working directory is no root; the refusal says what to do."""
    monkeypatch.chdir(root)
    message = await refused(make_settings, standin, ["README.md"])
    assert "MCP_LLM_FILE_ROOTS" in message and "# Project" not in message


async def test_every_tool_refuses_before_asking(make_settings: SettingsFactory, standin: StandIn, root: Path) -> None:
    """ask_claude, ask_many and extract_json refuse a bad file before any upstream request too."""
    calls: list[tuple[str, dict[str, Any]]] = [
        ("ask_claude", {"prompt": "x"}),
        ("ask_many", {"prompt": "x"}),
        ("extract_json", {"text": "x", "schema": {"type": "object"}}),
    ]
    async with connect(make_settings(file_roots=[str(root)])) as client:
        for tool, args in calls:
            result = await client.call_tool(tool, {**args, "files": ["../outside.txt"]})
            assert result.is_error and "outside the allowed roots" in text_of(result), tool
    assert standin.requests == []


async def test_extract_json_reads_files(make_settings: SettingsFactory, standin: StandIn, root: Path) -> None:
    """extract_json sends its files with the prompt, so the data can come from them."""
    (root / "order.txt").write_text("Ann ordered 3 apples.\n")
    standin.script(Reply(text='{"name": "Ann", "qty": 3}'))
    schema = {"type": "object", "properties": {"name": {"type": "string"}, "qty": {"type": "integer"}}}
    async with connect(make_settings(file_roots=[str(root)])) as client:
        result = ok(
            await client.call_tool("extract_json", {"text": "See the file.", "schema": schema, "files": ["order.txt"]})
        )
    assert result == {"name": "Ann", "qty": 3}
    content = standin.requests[0].body["input"][0]["content"]
    assert content.startswith('<file path="order.txt">\nAnn ordered 3 apples.\n')
