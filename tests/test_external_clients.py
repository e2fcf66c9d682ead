"""Independent MCP clients against the real server: the MCP Inspector CLI over stdio and the official
conformance suite over Streamable HTTP (both Node tools, installed by `.ci/run` with `npm ci`)."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx2
import pytest
from bearer_proxy import bearer_proxy
from conftest import server_env
from helpers import ANSI, NODE_BIN, indented, node_tools_env
from http_server import free_port, running_http_server

from mcp_llm_server._standin import Reply, StandIn

BASELINE = Path(__file__).with_name("conformance-baseline.yml")
# Scenarios that must pass (not merely stay out of the baseline): each must report a SUCCESS and no FAILURE.
MUST_PASS = ["server-initialize", "logging-set-level", "ping", "tools-list", "dns-rebinding-protection"]


@pytest.fixture(scope="module")
def node_env(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """Environment for the Node tools: our Node 22 first on PATH, Inspector state in a temporary folder."""
    needs = (NODE_BIN / "mcp-inspector", NODE_BIN / "conformance")
    return node_tools_env(tmp_path_factory.mktemp("node-home"), *needs)


# --- MCP Inspector CLI over stdio ---------------------------------------------------------------------------


def inspector(
    node_env: dict[str, str], standin: StandIn, *args: str, without: str | None = None
) -> subprocess.CompletedProcess[str]:
    """`mcp-inspector --cli -q --format json ARGS -- python -m mcp_llm_server`, the server's env passed by `-e`
    (`without` leaves one variable out)."""
    env = {name: value for name, value in server_env(standin).items() if name != without}
    env_args = [f"-e{name}={value}" for name, value in env.items()]
    command = [
        str(NODE_BIN / "mcp-inspector"),
        "--cli",
        "-q",
        "--format",
        "json",
        *env_args,
        *args,
        "--",
        sys.executable,
        "-m",
        "mcp_llm_server",
    ]
    return subprocess.run(command, env=node_env, capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL)


def result_of(done: subprocess.CompletedProcess[str]) -> dict[str, Any]:
    output = json.loads(done.stdout)
    assert isinstance(output, dict) and "result" in output, done.stdout
    result: dict[str, Any] = output["result"]
    return result


def test_inspector_initialize(node_env: dict[str, str], standin: StandIn) -> None:
    """The Inspector's `initialize` over stdio: exit 0, our server info, and the capabilities hosts rely on."""
    done = inspector(node_env, standin, "--method", "initialize")
    assert done.returncode == 0, indented(done.stderr)
    result = result_of(done)
    assert result["serverInfo"]["name"] == "mcp-llm-server"
    assert result["protocolVersion"] == "2025-11-25"
    assert {"tools", "logging"} <= set(result["capabilities"])


@pytest.mark.parametrize("strict", [False, True])
def test_inspector_tools_list(node_env: dict[str, str], standin: StandIn, strict: bool) -> None:
    """`tools/list` exits 0, also with `--strict` (no error-severity schema portability finding)."""
    done = inspector(node_env, standin, "--method", "tools/list", *(["--strict"] if strict else []))
    assert done.returncode == 0, indented(done.stderr)
    tools = {tool["name"]: tool for tool in result_of(done)["tools"]}
    assert {"ask_openai", "ask_claude"} <= set(tools)
    for name in ("ask_openai", "ask_claude"):
        assert tools[name]["inputSchema"]["required"] == ["prompt"]
        assert "text" in tools[name]["outputSchema"]["properties"]


@pytest.mark.parametrize(
    ("tool", "provider", "model"),
    [("ask_openai", "openai", "gpt-5.5"), ("ask_claude", "anthropic", "claude-sonnet-5-5")],
)
def test_inspector_tools_call(node_env: dict[str, str], standin: StandIn, tool: str, provider: str, model: str) -> None:
    """`tools/call` of each ask tool against the stand-in: exit 0 and the answer as text and structured content."""
    standin.default_reply = Reply(text="Hello from the stand-in, via the Inspector.")
    done = inspector(node_env, standin, "--method", "tools/call", "--tool-name", tool, "--tool-arg", "prompt=Say hi")
    assert done.returncode == 0, indented(done.stderr)
    result = result_of(done)
    assert result["isError"] is False
    assert result["content"] == [{"type": "text", "text": "Hello from the stand-in, via the Inspector."}]
    structured = result["structuredContent"]
    assert structured["text"] == "Hello from the stand-in, via the Inspector."
    assert (structured["provider"], structured["model"], structured["stop_reason"]) == (provider, model, "end")
    assert structured["attempts"] == 1 and structured["request_id"]
    (request,) = standin.requests
    assert request.body is not None and "Say hi" in json.dumps(request.body)


def test_inspector_tool_error_exits_5(node_env: dict[str, str], standin: StandIn) -> None:
    """A tool error (here: the provider has no key) is an `isError` result: the Inspector exits 5, tool_is_error."""
    args = ["--method", "tools/call", "--tool-name", "ask_claude", "--tool-arg", "prompt=hi"]
    done = inspector(node_env, standin, *args, without="ANTHROPIC_API_KEY")
    assert done.returncode == 5, indented(done.stdout + done.stderr)
    assert json.loads(done.stderr.strip().splitlines()[-1])["error"]["code"] == "tool_is_error"
    result = result_of(done)
    assert result["isError"] is True
    assert "ANTHROPIC_API_KEY" in result["content"][0]["text"]
    assert not standin.requests


def test_inspector_upstream_error_exits_5(node_env: dict[str, str], standin: StandIn) -> None:
    """An upstream failure (401 from the provider) is a tool error too: exit 5 with the result on stdout."""
    standin.script(Reply.error(401))
    done = inspector(
        node_env, standin, "--method", "tools/call", "--tool-name", "ask_openai", "--tool-arg", "prompt=hi"
    )
    assert done.returncode == 5, indented(done.stderr)
    assert result_of(done)["isError"] is True


def test_inspector_unknown_tool_exits_5(node_env: dict[str, str], standin: StandIn) -> None:
    """Calling a tool the server does not have: exit 5, tool_not_found."""
    done = inspector(node_env, standin, "--method", "tools/call", "--tool-name", "ask_nobody", "--tool-arg", "prompt=x")
    assert done.returncode == 5, indented(done.stderr)
    assert json.loads(done.stderr.strip().splitlines()[-1])["error"]["code"] == "tool_not_found"


# --- the official conformance suite over Streamable HTTP ------------------------------------------------------


def _scenario_checks(results: Path) -> dict[str, list[dict[str, Any]]]:
    """checks.json of each scenario, from `conformance server -o DIR` (folders `server-<scenario>-<timestamp>`)."""
    checks: dict[str, list[dict[str, Any]]] = {}
    for path in sorted(results.glob("server-*/checks.json")):
        scenario = re.sub(r"-\d{4}-\d{2}-\d{2}T.*$", "", path.parent.name).removeprefix("server-")
        checks[scenario] = json.loads(path.read_text())
    return checks


def conformance(node_env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    command = [str(NODE_BIN / "conformance"), "server", *args]
    return subprocess.run(command, env=node_env, capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL)


def test_conformance_suite(node_env: dict[str, str], standin: StandIn, tmp_path: Path) -> None:
    """The whole active suite against our HTTP endpoint passes, bar the baseline's fixture-only scenarios."""
    results = tmp_path / "results"
    with running_http_server(server_env(standin), tmp_path) as server:
        done = conformance(node_env, "--url", server.mcp_url, "--expected-failures", str(BASELINE), "-o", str(results))
    # The suite's own summary stays in this message (indented), never on the run's output as a bare line.
    assert done.returncode == 0, indented(done.stdout + done.stderr)
    assert "Baseline check passed" in ANSI.sub("", done.stdout), indented(done.stdout)
    checks = _scenario_checks(results)
    for scenario in [*MUST_PASS, "server-sse-multiple-streams"]:
        statuses = [check["status"] for check in checks.get(scenario, [])]
        assert "SUCCESS" in statuses and "FAILURE" not in statuses, f"{scenario}: {statuses}"
    assert sorted(c["id"] for c in checks["dns-rebinding-protection"] if c["status"] == "SUCCESS") == [
        "localhost-host-rebinding-rejected",
        "localhost-host-valid-accepted",
    ]


def test_conformance_stateless(node_env: dict[str, str], standin: StandIn, tmp_path: Path) -> None:
    """Stateless mode passes the same suite; server-sse-multiple-streams only warns there (no session id by design)."""
    baseline = tmp_path / "baseline-stateless.yml"
    baseline.write_text(
        BASELINE.read_text() + "  - server-sse-multiple-streams  # needs a session id; stateless has none\n"
    )
    results = tmp_path / "results"
    with running_http_server(server_env(standin), tmp_path, "--stateless") as server:
        done = conformance(node_env, "--url", server.mcp_url, "--expected-failures", str(baseline), "-o", str(results))
    assert done.returncode == 0, indented(done.stdout + done.stderr)
    checks = _scenario_checks(results)
    for scenario in MUST_PASS:
        statuses = [check["status"] for check in checks.get(scenario, [])]
        assert "SUCCESS" in statuses and "FAILURE" not in statuses, f"{scenario}: {statuses}"
    assert [check["status"] for check in checks["server-sse-multiple-streams"]] == ["WARNING"]


def test_conformance_with_named_tokens(node_env: dict[str, str], standin: StandIn, tmp_path: Path) -> None:
    """With callers told apart (named tokens: the gate on, sessions bound to the token), the suite passes as
    before. Its client sends no credentials, so a loopback proxy adds the token; without it every request is 401."""
    token = "conformance-token-0123456789"
    env = server_env(standin, MCP_LLM_HTTP_TOKENS=json.dumps({"suite": token}))
    results = tmp_path / "results"
    with running_http_server(env, tmp_path) as server:
        assert httpx2.post(server.mcp_url, json={}).status_code == 401
        with bearer_proxy(server.base_url, token, free_port()) as proxy:
            done = conformance(
                node_env, "--url", f"{proxy}/mcp", "--expected-failures", str(BASELINE), "-o", str(results)
            )
        stderr = server.stderr()
    assert done.returncode == 0, indented(done.stdout + done.stderr)
    checks = _scenario_checks(results)
    for scenario in [*MUST_PASS, "server-sse-multiple-streams"]:
        statuses = [check["status"] for check in checks.get(scenario, [])]
        assert "SUCCESS" in statuses and "FAILURE" not in statuses, f"{scenario}: {statuses}"
    assert token not in stderr


def test_inspector_lists_and_gets_the_prompts(node_env: dict[str, str], standin: StandIn) -> None:
    """The slash-command prompts through the Inspector: listed with their arguments, and one rendered."""
    listed = inspector(node_env, standin, "--method", "prompts/list")
    assert listed.returncode == 0, indented(listed.stderr)
    prompts = {prompt["name"]: prompt for prompt in result_of(listed)["prompts"]}
    assert set(prompts) == {"second_opinion", "judge", "review_files"}
    assert [(a["name"], a.get("required")) for a in prompts["judge"]["arguments"]] == [
        ("question", True),
        ("targets", True),
    ]
    args = ["--method", "prompts/get", "--prompt-name", "judge", "--prompt-args", "question=Is 91 prime?"]
    got = inspector(node_env, standin, *args, "targets=openai,anthropic")
    assert got.returncode == 0, indented(got.stderr)
    message = result_of(got)["messages"][0]
    assert message["role"] == "user" and '`targets` = ["openai", "anthropic"]' in message["content"]["text"]
