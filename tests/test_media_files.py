"""Images and PDFs as `files`: recognised by their first bytes, checked like text files, sent in each API's wire
format (end to end through the MCP client, asserted on the stand-in's recorded request bodies)."""

from __future__ import annotations

import base64
import json
import struct
import zlib
from pathlib import Path

# Imported up front so the server's lazy SDK import costs nothing inside the calls.
import anthropic  # noqa: F401
import anyio
import openai  # noqa: F401
import pytest
from conftest import OPENAI_KEY, SettingsFactory, text_of
from helpers import connect, error_of, ok
from helpers import refused_files as refused

from mcp_llm_server._standin import Reply, StandIn
from mcp_llm_server.files import FileLimits, FileRefused, read_files

pytestmark = pytest.mark.anyio


def png_bytes() -> bytes:
    """A real 1x1 PNG."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", 1, 1, 8, 2, 0, 0, 0)
    pixels = zlib.compress(b"\x00\xff\x00\x00")
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", pixels) + chunk(b"IEND", b"")


JPEG = b"\xff\xd8\xff\xe0\x00\x10JFIF\x00\x01\x01\x00\x00\x01\x00\x01\x00\x00\xff\xd9"
GIF = (
    b"GIF89a\x01\x00\x01\x00\x80\x00\x00\xff\xff\xff\x00\x00\x00!\xf9\x04\x01\x00\x00\x00\x00"
    b",\x00\x00\x00\x00\x01\x00\x01\x00\x00\x02\x02D\x01\x00;"
)
WEBP = b"RIFF\x1a\x00\x00\x00WEBPVP8L\x0d\x00\x00\x00/\x00\x00\x00\x10\x07\x10\x11\x11\x88\x88\xfe\x07\x00"
PDF = (
    b"%PDF-1.4\n1 0 obj << /Type /Catalog /Pages 2 0 R >> endobj\n"
    b"2 0 obj << /Type /Pages /Kids [3 0 R] /Count 1 >> endobj\n"
    b"3 0 obj << /Type /Page /Parent 2 0 R >> endobj\ntrailer << /Root 1 0 R >>\n%%EOF\n"
)


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def padded(head: bytes, size: int) -> bytes:
    """`head` followed by filler, `size` bytes in all (the kind is told by the head alone)."""
    return head + b"\x00" * (size - len(head))


@pytest.fixture
def root(tmp_path: Path) -> Path:
    root = tmp_path / "root"
    (root / "img").mkdir(parents=True)
    (root / "img" / "shot.png").write_bytes(png_bytes())
    (root / "photo.jpg").write_bytes(JPEG)
    (root / "anim.gif").write_bytes(GIF)
    (root / "pic.webp").write_bytes(WEBP)
    (root / "paper.pdf").write_bytes(PDF)
    (root / "notes.md").write_text("# Notes\n")
    return root


async def test_png_to_responses(make_settings: SettingsFactory, standin: StandIn, root: Path) -> None:
    """A PNG goes to the Responses API as `input_image` (a data URL), after a text part labelling its path."""
    async with connect(make_settings(file_roots=[str(root)])) as client:
        ok(await client.call_tool("ask_openai", {"prompt": "Describe", "files": ["img/shot.png"]}))
    assert standin.requests[0].body["input"] == [
        {
            "role": "user",
            "content": [
                {"type": "input_text", "text": '<file path="img/shot.png" type="image/png">'},
                {"type": "input_image", "image_url": f"data:image/png;base64,{b64(png_bytes())}", "detail": "auto"},
                {"type": "input_text", "text": "Describe"},
            ],
        }
    ]


async def test_pdf_to_responses(make_settings: SettingsFactory, standin: StandIn, root: Path) -> None:
    """A PDF goes to the Responses API as `input_file` with its name and a data URL; a text file before it stays
    text, in the order given."""
    async with connect(make_settings(file_roots=[str(root)])) as client:
        ok(await client.call_tool("ask_openai", {"prompt": "Summarise", "files": ["notes.md", "paper.pdf"]}))
    assert standin.requests[0].body["input"][0]["content"] == [
        {
            "type": "input_text",
            "text": '<file path="notes.md">\n# Notes\n\n</file>\n\n<file path="paper.pdf" type="application/pdf">',
        },
        {"type": "input_file", "filename": "paper.pdf", "file_data": f"data:application/pdf;base64,{b64(PDF)}"},
        {"type": "input_text", "text": "Summarise"},
    ]


async def test_jpeg_and_pdf_to_chat_completions(make_settings: SettingsFactory, standin: StandIn, root: Path) -> None:
    """Chat Completions gets an `image_url` part and a `file` part."""
    async with connect(make_settings(file_roots=[str(root)], openai_api="chat")) as client:
        args = {"prompt": "Compare", "files": ["photo.jpg", "paper.pdf"], "system": "Be brief."}
        ok(await client.call_tool("ask_openai", args))
    assert standin.requests[0].body["messages"] == [
        {"role": "system", "content": "Be brief."},
        {
            "role": "user",
            "content": [
                {"type": "text", "text": '<file path="photo.jpg" type="image/jpeg">'},
                {"type": "image_url", "image_url": {"url": f"data:image/jpeg;base64,{b64(JPEG)}"}},
                {"type": "text", "text": '<file path="paper.pdf" type="application/pdf">'},
                {
                    "type": "file",
                    "file": {"filename": "paper.pdf", "file_data": f"data:application/pdf;base64,{b64(PDF)}"},
                },
                {"type": "text", "text": "Compare"},
            ],
        },
    ]


async def test_webp_gif_and_pdf_to_anthropic(make_settings: SettingsFactory, standin: StandIn, root: Path) -> None:
    """Anthropic gets image and document blocks (base64 sources); the last block before the prompt carries
    `cache_control`."""
    async with connect(make_settings(file_roots=[str(root)])) as client:
        ok(await client.call_tool("ask_claude", {"prompt": "Look", "files": ["pic.webp", "anim.gif", "paper.pdf"]}))
    assert standin.requests[0].body["messages"][0]["content"] == [
        {"type": "text", "text": '<file path="pic.webp" type="image/webp">'},
        {"type": "image", "source": {"type": "base64", "media_type": "image/webp", "data": b64(WEBP)}},
        {"type": "text", "text": '<file path="anim.gif" type="image/gif">'},
        {"type": "image", "source": {"type": "base64", "media_type": "image/gif", "data": b64(GIF)}},
        {"type": "text", "text": '<file path="paper.pdf" type="application/pdf">'},
        {
            "type": "document",
            "source": {"type": "base64", "media_type": "application/pdf", "data": b64(PDF)},
            "cache_control": {"type": "ephemeral"},
        },
        {"type": "text", "text": "Look"},
    ]


async def test_the_kind_comes_from_the_bytes_not_the_name(
    make_settings: SettingsFactory, standin: StandIn, root: Path
) -> None:
    """A PNG named `.txt` is sent as an image; bytes named `.png` that are no image are refused as binary."""
    (root / "diagram.txt").write_bytes(png_bytes())
    async with connect(make_settings(file_roots=[str(root)])) as client:
        ok(await client.call_tool("ask_claude", {"prompt": "Look", "files": ["diagram.txt"]}))
    assert standin.requests[0].body["messages"][0]["content"][1]["source"]["media_type"] == "image/png"
    standin.clear()
    (root / "fake.png").write_bytes(b"\x00\x01not an image")
    message = await refused(make_settings, standin, ["fake.png"], file_roots=[str(root)])
    assert "binary" in message and "PNG, JPEG, GIF and WebP images and PDF documents" in message


@pytest.mark.parametrize(
    ("name", "head", "setting", "variable"),
    [
        ("big.png", b"\x89PNG\r\n\x1a\n", "max_image_bytes", "MCP_LLM_MAX_IMAGE_BYTES"),
        ("big.pdf", b"%PDF-1.7\n", "max_document_bytes", "MCP_LLM_MAX_DOCUMENT_BYTES"),
    ],
)
async def test_size_limit_at_the_edge(
    make_settings: SettingsFactory, standin: StandIn, root: Path, name: str, head: bytes, setting: str, variable: str
) -> None:
    """A file of exactly the cap is sent (the text caps, far smaller, do not apply to it); one byte more is
    refused, naming the file, the cap and the variable."""
    limits = {setting: 4_000, "max_file_bytes": 100, "max_files_total_bytes": 100}
    (root / name).write_bytes(padded(head, 4_000))
    async with connect(make_settings(file_roots=[str(root)], **limits)) as client:
        ok(await client.call_tool("ask_claude", {"prompt": "Look", "files": [name]}))
    standin.clear()
    (root / name).write_bytes(padded(head, 4_001))
    message = await refused(make_settings, standin, [name], file_roots=[str(root)], **limits)
    assert f"`{name}` is 4,001 bytes" in message and "4,000" in message and variable in message


async def test_media_total_at_the_edge(make_settings: SettingsFactory, standin: StandIn, root: Path) -> None:
    """Images and PDFs have a total of their own (MCP_LLM_MAX_MEDIA_TOTAL_BYTES), apart from the text files'."""
    (root / "a.png").write_bytes(padded(b"\x89PNG\r\n\x1a\n", 3_000))
    (root / "b.pdf").write_bytes(padded(b"%PDF-1.7\n", 3_000))
    limits = {"max_media_total_bytes": 6_000, "max_files_total_bytes": 100}
    async with connect(make_settings(file_roots=[str(root)], **limits)) as client:
        ok(await client.call_tool("ask_claude", {"prompt": "Look", "files": ["a.png", "b.pdf", "notes.md"]}))
    standin.clear()
    limits["max_media_total_bytes"] = 5_999
    message = await refused(make_settings, standin, ["a.png", "b.pdf"], file_roots=[str(root)], **limits)
    assert "6,000 bytes" in message and "MCP_LLM_MAX_MEDIA_TOTAL_BYTES" in message


async def test_other_binary_still_refused(make_settings: SettingsFactory, standin: StandIn, root: Path) -> None:
    """A binary file that is none of the accepted kinds is refused; the message says which kinds are."""
    (root / "archive.zip").write_bytes(b"PK\x03\x04\x14\x00\x00\x00\x08\x00")
    message = await refused(make_settings, standin, ["archive.zip"], file_roots=[str(root)])
    assert "`archive.zip` is a binary file" in message and "PDF documents are sent" in message


async def test_secret_name_refused(make_settings: SettingsFactory, standin: StandIn, root: Path) -> None:
    """An image under a name that says secret is refused, like a text file."""
    (root / "signing.pem").write_bytes(png_bytes())
    assert "looks like a secret" in await refused(make_settings, standin, ["signing.pem"], file_roots=[str(root)])


async def test_outside_the_roots_refused(make_settings: SettingsFactory, standin: StandIn, root: Path) -> None:
    """An image outside the roots is refused, directly or through a symlink inside them."""
    outside = root.parent / "elsewhere.png"
    outside.write_bytes(png_bytes())
    (root / "link.png").symlink_to(outside)
    for given in (str(outside), "link.png"):
        standin.clear()
        assert "outside the allowed roots" in await refused(make_settings, standin, [given], file_roots=[str(root)])


async def test_own_key_inside_an_image_refused(make_settings: SettingsFactory, standin: StandIn, root: Path) -> None:
    """The server's own API key inside an image's bytes (a PNG text chunk) is never sent, whatever is allowed;
    the refusal does not show it."""
    (root / "leak.png").write_bytes(png_bytes()[:-12] + b"tEXtkey\x00" + OPENAI_KEY.encode() + png_bytes()[-12:])
    message = await refused(make_settings, standin, ["leak.png"], file_roots=[str(root)], allow_secret_files=True)
    assert "this server's own secrets" in message and OPENAI_KEY not in message


async def test_key_in_uncompressed_pdf_text_refused(
    make_settings: SettingsFactory, standin: StandIn, root: Path
) -> None:
    """A token in a PDF's uncompressed text is found (the raw bytes are scanned); MCP_LLM_ALLOW_SECRET_FILES
    allows it, as for text files."""
    token = "ghp_" + "a1B2" * 9
    (root / "memo.pdf").write_bytes(PDF.replace(b"%%EOF", f"BT ({token}) Tj ET\n%%EOF".encode()))
    message = await refused(make_settings, standin, ["memo.pdf"], file_roots=[str(root)])
    assert "a GitHub token" in message and token not in message
    async with connect(make_settings(file_roots=[str(root)], allow_secret_files=True)) as client:
        ok(await client.call_tool("ask_claude", {"prompt": "Look", "files": ["memo.pdf"]}))


async def test_a_conversation_keeps_a_note_not_the_bytes(
    make_settings: SettingsFactory, standin: StandIn, root: Path
) -> None:
    """An image of an earlier turn is not stored: the next turn (on the other provider) gets a note with its path,
    type and digest, and is told to send it again to show it again."""
    import hashlib

    async with connect(make_settings(file_roots=[str(root)])) as client:
        first = ok(await client.call_tool("ask_claude", {"prompt": "What is it?", "files": ["img/shot.png"]}))
        args = {"prompt": "And its colour?", "conversation_id": first["conversation_id"]}
        ok(await client.call_tool("ask_openai", args))
        detail = ok(await client.call_tool("get_conversation", {"conversation_id": first["conversation_id"]}))
    digest = hashlib.sha256(png_bytes()).hexdigest()
    earlier = standin.requests[1].body["input"][0]["content"]
    assert earlier == (
        f'<file path="img/shot.png">\n[image/png, sha256 {digest}: sent in an earlier turn and not kept; send it '
        "again in `files` to show it again]\n</file>\n\nWhat is it?"
    )
    assert b64(png_bytes()) not in json.dumps(standin.requests[1].body)
    assert detail["turns"][0]["files"] == [
        {"path": "img/shot.png", "sha256": digest, "chars": 0, "media_type": "image/png"}
    ]


async def test_upstream_refusing_images(make_settings: SettingsFactory, standin: StandIn, root: Path) -> None:
    """A model that does not take images answers 400: the host gets an isError carrying the upstream's message and
    what to do, after one request (not retried)."""
    said = "Invalid content type. image_url is only supported by certain models."
    standin.script(Reply.error(400, message=said, error_type="invalid_request_error"))
    async with connect(make_settings(file_roots=[str(root)])) as client:
        result = await client.call_tool("ask_openai", {"prompt": "Describe", "files": ["img/shot.png"]})
    assert error_of(result)["kind"] == "bad_request"
    message = text_of(result)
    assert said in message and "use one that does" in message and "call without them" in message
    assert len(standin.requests) == 1


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="needs Linux /proc")
async def test_head_over_a_tiny_cap_refused_cleanly() -> None:
    """A file that reports 0 bytes yet reads more (as /proc files do, or one growing after it was measured) is
    refused as grown over the cap, even when the first bytes read to tell its kind are already over it."""
    limits = FileLimits(
        roots=(Path("/proc/self"),),
        max_file_bytes=5,
        max_total_bytes=5,
        max_image_bytes=5,
        max_document_bytes=5,
        max_media_total_bytes=5,
    )
    with pytest.raises(FileRefused, match="grew over 5 bytes"):
        await read_files(["status"], limits, deadline=anyio.current_time() + 30)
