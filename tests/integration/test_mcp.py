"""MCP both ways, against real servers no one here wrote, offline.

Agents calling MCP tools: `mcp-server-time` and `mcp-server-git` (from the package index) over
stdio, behind a relay that counts what they are asked (`prefect_beluga.testing.mcp`), and an SDK
`MCPServer` (FastMCP) of this file's own over streamable HTTP on 127.0.0.1. The model is the
loopback OpenAI server with scripted tool calls. Checked: schemas and descriptions reach the
model, real answers come back, each call is a task run named after the tool, one session (one
handshake, one tools/list) per run, parallel calls share it, the process ends with the run (on
error and cancel too), server errors (isError, JSON-RPC errors) go back to the model, approvals,
durable calls in a retried flow run, tool stream events.

Runnables and Workflows as MCP tools: `python -m prefect_beluga.mcp` in another process, over
stdio and over HTTP with a bearer token, called with the official `mcp` client.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import anyio
import pytest
from mcp import Client, MCPError, StdioServerParameters
from mcp.server.mcpserver import Context
from mcp.server.mcpserver import MCPServer as FastMCP
from mcp.server.mcpserver.exceptions import ToolError
from mcp.server.mcpserver.utilities.types import Image
from prefect import flow
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import FlowFilter, FlowFilterName
from prefect.context import FlowRunContext
from prefect.settings import PREFECT_API_URL, PREFECT_LOCAL_STORAGE_PATH
from pydantic import SecretStr

from prefect_beluga import Chain, Orchestrator, ValidationError, llms
from prefect_beluga.agents import Agent
from prefect_beluga.core.runnable import RunnableCallable
from prefect_beluga.mcp import MCPServer
from prefect_beluga.mcp import _session as mcp_session
from prefect_beluga.schema import ToolMessage
from prefect_beluga.testing import OpenAIServer
from prefect_beluga.testing.helpers import aeventually, assert_key_stored_nowhere, eventually, reaped, task_runs
from prefect_beluga.testing.mcp import HTTPMCPServer, MCPTraffic
from prefect_beluga.tools import tool

HERE = Path(__file__).parent
TOKEN = "mcp-test-token-" + "x" * 8


def chat_model(server: OpenAIServer) -> llms.OpenAIChatModel:
    return llms.OpenAIChatModel(llms.Config(model_name="gpt-4o-mini", api_key="sk-test", base_url=server.base_url))


def call(name: str, id: str | None = None, **arguments) -> dict:
    return {"name": name, "arguments": arguments, **({"id": id} if id else {})}


def time_server(traffic: MCPTraffic, **options) -> MCPServer:
    return MCPServer(**traffic.relayed(sys.executable, "-m", "mcp_server_time", "--local-timezone", "UTC"), **options)


@tool
def add(a: int, b: int) -> int:
    """Add two integers."""
    return a + b


# -- our own FastMCP server over streamable HTTP ---------------------------------------------------

shop = FastMCP("shop")


@shop.tool()
def price(item: str, quantity: int = 1) -> str:
    """The price of an item, in euros."""
    return f"{quantity} x {item} = {quantity * 2.5:.2f} EUR"


@shop.tool()
def stock(item: str) -> dict:
    """How many of an item are in stock (structured)."""
    return {"item": item, "in_stock": 7}


@shop.tool()
def refund(order: str) -> str:
    """Refund an order (always fails: the server says why)."""
    raise ToolError(f"order {order} is older than 30 days")


@shop.tool()
def audit(order: str) -> str:
    """Raises a JSON-RPC error."""
    raise MCPError(code=-32602, message=f"audit of {order} is not allowed")


@shop.tool()
async def nap(seconds: float) -> str:
    """Sleep a while."""
    await asyncio.sleep(seconds)
    return "rested"


_naps: list[str] = []


@shop.tool()
async def slow_once(key: str) -> str:
    """Slow the first time it is asked about a key (a call lost in transit), quick after that."""
    _naps.append(key)
    if _naps.count(key) == 1:
        await asyncio.sleep(5)
    return f"{key}: ready on call {_naps.count(key)}"


@shop.tool()
def logo() -> Image:
    """The shop's logo."""
    return Image(data=b"\x89PNG\r\n\x1a\n" + b"0" * 92, format="png")


@pytest.fixture(scope="module")
def shop_server():
    with HTTPMCPServer(shop, token=TOKEN) as server:
        yield server


# -- agents calling MCP tools ------------------------------------------------------------------------


def test_stdio_time_server_tools_are_task_runs_with_one_session_per_run(openai_server, tmp_path):
    traffic = MCPTraffic(tmp_path / "time.log")
    clock = time_server(traffic)
    openai_server.reply_with(
        {"tool_calls": [call("get_current_time", timezone="Asia/Tokyo"), call("add", a=2, b=3)]},
        {"tool_calls": [call("convert_time", source_timezone="UTC", time="12:00", target_timezone="Asia/Tokyo")]},
        "It is 21:00 in Tokyo.",
    )
    agent = Agent(chat_model(openai_server), tools=[add, clock], name="clock-agent")

    @flow(name="mcp-host")
    async def host():
        return FlowRunContext.get().flow_run.id, await agent.ainvoke("Time in Tokyo?")

    flow_run_id, result = asyncio.run(host())
    assert result["output"] == "It is 21:00 in Tokyo."
    # the server's tools, with their schemas and descriptions, next to the plain tool
    specs = {t["function"]["name"]: t["function"] for t in openai_server.chat_requests()[0].body["tools"]}
    assert set(specs) == {"add", "get_current_time", "convert_time"}
    assert specs["get_current_time"]["description"] == "Get current time in a specific timezone"
    assert specs["get_current_time"]["parameters"]["required"] == ["timezone"]
    # real answers
    first = openai_server.tool_results(1)
    now = json.loads(first[0]["content"])
    assert now["timezone"] == "Asia/Tokyo" and now["datetime"].endswith("+09:00")
    assert first[1]["content"] == "5"
    converted = json.loads(openai_server.tool_results(2)[-1]["content"])
    assert converted["target"]["datetime"].endswith("T21:00:00+09:00")
    # each call a task run named after the tool
    runs = asyncio.run(task_runs(flow_run_id, expected=6))
    assert sorted(r.name for r in runs) == sorted(
        ["openai:gpt-4o-mini"] * 3 + ["get_current_time", "add", "convert_time"])
    # one session for the run: one handshake, one tools/list; the process ended with the run
    assert traffic.handshakes() == 1 and traffic.count("tools/list") == 1
    assert traffic.count("tools/call") == 2
    assert traffic.alive() == []

    # a second run: a session of its own
    openai_server.reply_with("No tools needed.")
    assert agent.invoke("Hi")["output"] == "No tools needed."
    assert traffic.handshakes() == 2 and traffic.count("tools/list") == 2
    assert traffic.alive() == []


def test_concurrent_runs_of_one_agent_have_a_session_each(openai_server, tmp_path):
    traffic = MCPTraffic(tmp_path / "time.log")
    agent = Agent(chat_model(openai_server), tools=[time_server(traffic)], name="twins")

    def responder(messages: list[dict]) -> dict | str:
        zone = next(m["content"] for m in messages if m["role"] == "user")
        results = [m["content"] for m in messages if m["role"] == "tool"]
        if not results:
            return {"tool_calls": [call("get_current_time", timezone=zone)]}
        return f"{zone}: {json.loads(results[0])['timezone']}"

    openai_server.responder = responder

    async def both() -> list[dict]:
        return await asyncio.gather(agent.ainvoke("Europe/Oslo"), agent.ainvoke("America/Lima"))

    oslo, lima = asyncio.run(both())
    assert (oslo["output"], lima["output"]) == ("Europe/Oslo: Europe/Oslo", "America/Lima: America/Lima")
    assert traffic.handshakes() == 2 and traffic.count("tools/list") == 2 and traffic.count("tools/call") == 2
    assert traffic.alive() == []


def test_git_server_on_a_throwaway_repository_parallel_calls_share_the_session(openai_server, tmp_path):
    repo = tmp_path / "repo"
    repo.mkdir()
    git = ["git", "-C", str(repo), "-c", "user.name=Ann", "-c", "user.email=ann@example.com"]
    subprocess.run([*git[:3], "init", "-q"], check=True)
    (repo / "notes.txt").write_text("hello\n")
    subprocess.run([*git, "add", "notes.txt"], check=True)
    subprocess.run([*git, "commit", "-qm", "Add the release notes"], check=True)
    (repo / "notes.txt").write_text("hello, world\n")
    traffic = MCPTraffic(tmp_path / "git.log")
    server = MCPServer(**traffic.relayed(sys.executable, "-m", "mcp_server_git", "--repository", str(repo)),
                       include=["git_status", "git_log", "git_diff_unstaged", "git_show"], prefix="repo_")
    openai_server.reply_with(
        {"tool_calls": [call("repo_git_log", repo_path=str(repo)), call("repo_git_diff_unstaged", repo_path=str(repo)),
                        call("repo_git_status", repo_path=str(repo)),
                        call("repo_git_show", repo_path=str(repo), revision="no-such-revision")]},
        "One commit; notes.txt changed.",
    )
    result = Agent(chat_model(openai_server), tools=[server], name="git-agent").invoke("What changed?")
    assert result["output"] == "One commit; notes.txt changed."
    names = {t["function"]["name"] for t in openai_server.chat_requests()[0].body["tools"]}
    assert names == {"repo_git_status", "repo_git_log", "repo_git_diff_unstaged", "repo_git_show"}
    log, diff, status, show = (m["content"] for m in openai_server.tool_results())
    assert "Add the release notes" in log
    assert "+hello, world" in diff
    assert "notes.txt" in status
    # the server's error (isError) went back to the model as the tool message
    assert show.startswith("Error: tool 'repo_git_show' failed: MCPToolError:") and "no-such-revision" in show
    assert traffic.handshakes() == 1 and traffic.count("tools/list") == 1 and traffic.count("tools/call") == 4
    assert traffic.alive() == []


def test_http_server_of_our_own_results_errors_and_headers(openai_server, shop_server):
    shop_server.reset()
    server = MCPServer(url=shop_server.url, headers={"Authorization": SecretStr(f"Bearer {TOKEN}")},
                       exclude=["audit", "nap", "slow_once"], timeout=20)
    openai_server.reply_with(
        {"tool_calls": [call("price", item="tea", quantity=4), call("stock", item="tea"), call("logo"),
                        call("refund", order="A1"), call("price")]},
        "Tea: 10 EUR, 7 in stock.",
    )
    agent = Agent(chat_model(openai_server), tools=[server], name="shop-agent")
    result = agent.invoke("How much are 4 teas?")
    assert result["output"] == "Tea: 10 EUR, 7 in stock."
    names = {t["function"]["name"] for t in openai_server.chat_requests()[0].body["tools"]}
    assert names == {"price", "stock", "refund", "logo"}  # audit excluded
    price_, stock_, logo_, refund_, missing = (m["content"] for m in openai_server.tool_results())
    assert price_ == "4 x tea = 10.00 EUR"
    assert json.loads(stock_) == {"item": "tea", "in_stock": 7}
    assert logo_ == "[image (image/png, about 100 bytes) returned by the tool; not shown]"
    assert refund_.startswith("Error: tool 'refund' failed: MCPToolError: ")  # then the server's own text
    assert refund_.endswith("order A1 is older than 30 days")
    assert missing.startswith("Error: invalid arguments for tool 'price': field 'item' is required")
    assert shop_server.handshakes() == 1 and shop_server.count("tools/list") == 1
    assert shop_server.count("tools/call") == 4  # the bad arguments never reached the server
    assert {r["authorization"] for r in shop_server.requests} == {f"Bearer {TOKEN}"}
    assert TOKEN not in repr(server) and TOKEN not in repr(vars(server))

    # a JSON-RPC error also goes back to the model
    openai_server.reply_with({"tool_calls": [call("audit", order="B2")]}, "Not allowed.")
    agent = Agent(chat_model(openai_server), tools=[MCPServer(url=shop_server.url, headers={
        "Authorization": f"Bearer {TOKEN}"}, include=["audit"])])
    assert agent.invoke("Audit B2")["output"] == "Not allowed."
    [message] = openai_server.tool_results()
    assert message["content"].startswith("Error: tool 'audit' failed: MCPToolError: JSON-RPC error -32602")
    assert "not allowed" in message["content"]
    # the server's timeout is the call's task timeout; the session goes on for the other calls
    shop_server.reset()
    openai_server.reply_with({"tool_calls": [call("nap", seconds=30), call("price", item="jam")]}, "Jam is cheap.")
    agent = Agent(chat_model(openai_server), tools=[MCPServer(url=shop_server.url, headers={
        "Authorization": f"Bearer {TOKEN}"}, include=["nap", "price"], timeout=0.5)])
    assert agent.invoke("Jam?")["output"] == "Jam is cheap."
    napped, priced = (m["content"] for m in openai_server.tool_results())
    assert napped.startswith("Error: tool 'nap' timed out") and priced == "1 x jam = 2.50 EUR"
    assert shop_server.handshakes() == 1
    # the bearer token is in no parameter, task input, state, log, event or result on the API
    assert_key_stored_nowhere(TOKEN)


def test_retries_repeat_a_call_lost_in_transit_never_a_server_error(openai_server, shop_server):
    """`MCPServer(retries=...)`: a timed-out call is a Prefect task retry (the second attempt
    answers); an `isError` result and a JSON-RPC error go to the model after one call."""
    shop_server.reset()
    server = MCPServer(url=shop_server.url, headers={"Authorization": f"Bearer {TOKEN}"},
                       include=["slow_once", "refund", "audit"], timeout=1, retries=2)
    openai_server.reply_with(
        {"tool_calls": [call("slow_once", key="k1"), call("refund", order="A1"), call("audit", order="B2")]},
        "Done.",
    )
    agent = Agent(chat_model(openai_server), tools=[server], name="retrying")

    @flow(name="mcp-retries")
    async def host():
        return FlowRunContext.get().flow_run.id, await agent.ainvoke("Go")

    flow_run_id, result = asyncio.run(host())
    assert result["output"] == "Done."
    slow, refunded, audited = (m["content"] for m in openai_server.tool_results())
    assert slow == "k1: ready on call 2"
    assert refunded.startswith("Error: tool 'refund' failed: MCPToolError: ")
    assert audited.startswith("Error: tool 'audit' failed: MCPToolError: JSON-RPC error -32602")
    assert shop_server.count("tools/call") == 4  # slow_once twice, refund once, audit once
    runs = {r.name: r for r in asyncio.run(task_runs(flow_run_id, expected=5))}
    assert runs["slow_once"].run_count == 2 and runs["slow_once"].state.is_completed()
    assert runs["refund"].run_count == 1 and runs["audit"].run_count == 1
    assert shop_server.handshakes() == 1
    with pytest.raises(ValidationError, match="MCPServer: retries must be an int >= 0"):
        MCPServer(url=shop_server.url, retries=-1)
    with pytest.raises(ValidationError, match="MCPServer: retry_delay"):
        MCPServer(url=shop_server.url, retry_delay="soon")


def test_a_changed_tool_list_is_listed_again_for_the_next_turn(openai_server):
    catalog = FastMCP("catalog")

    def secret_menu() -> str:
        """The secret menu."""
        return "truffle fries"

    @catalog.tool()
    async def unlock(ctx: Context) -> str:
        """Unlock the secret menu (adds a tool)."""
        catalog.add_tool(secret_menu)
        await ctx.notify_tools_changed()
        # the change event travels on the client's listen stream, not with this result: let it
        # arrive before the result does, as it would from a server whose result takes a while
        await asyncio.sleep(0.3)
        return "unlocked"

    openai_server.reply_with({"tool_calls": [call("unlock")]}, {"tool_calls": [call("secret_menu")]}, "Truffle fries.")
    with HTTPMCPServer(catalog) as server:
        agent = Agent(chat_model(openai_server), tools=[MCPServer(url=server.url)], name="curious")
        assert agent.invoke("What is on the secret menu?")["output"] == "Truffle fries."
        first, second, _ = (r.body["tools"] for r in openai_server.chat_requests())
        assert [t["function"]["name"] for t in first] == ["unlock"]
        assert [t["function"]["name"] for t in second] == ["unlock", "secret_menu"]
        assert openai_server.tool_results()[-1]["content"] == "truffle fries"
        assert server.handshakes() == 1 and server.count("tools/list") == 2


def test_the_session_closes_when_the_run_fails_or_is_cancelled(openai_server, tmp_path, monkeypatch):
    traffic = MCPTraffic(tmp_path / "time.log")
    agent = Agent(chat_model(openai_server), tools=[time_server(traffic)], name="failing")
    openai_server.fail_next(400)
    with pytest.raises(Exception, match="400"):
        agent.invoke("Time?")
    assert traffic.handshakes() == 1 and traffic.alive() == []

    async def cancelled() -> None:
        openai_server.slow_next(30)
        task = asyncio.ensure_future(agent.ainvoke("Time?"))
        await aeventually(lambda: len(openai_server.chat_requests()) >= 2, "the slow model turn to start",
                          timeout=30, interval=0.05)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(cancelled())
    assert traffic.handshakes() == 2 and traffic.alive() == []

    # a server that cannot start: a clear error naming it, nothing left running
    broken = Agent(chat_model(openai_server), tools=[MCPServer(command=sys.executable, args=["-c", "pass"])])
    with pytest.raises(ConnectionError, match="could not open a session with MCP server"):
        broken.invoke("Time?")

    # one that never answers: a bounded wait, then its process is stopped
    monkeypatch.setattr(mcp_session, "CONNECT_TIMEOUT", 0.5)
    mute = MCPTraffic(tmp_path / "mute.log")
    silent = Agent(chat_model(openai_server), tools=[MCPServer(**mute.relayed(
        sys.executable, "-c", "import sys, time; sys.stdin.read(); time.sleep(60)"))])
    with pytest.raises(ConnectionError, match="did not answer its handshake and tools/list within 0.5 s"):
        silent.invoke("Time?")
    assert mute.alive() == []


def test_a_killed_process_leaves_no_stdio_server_behind(openai_server, tmp_path):
    """SIGKILL of the agent's process (no cleanup runs): the server's stdin closes, and it exits."""
    traffic = MCPTraffic(tmp_path / "time.log")
    openai_server.slow_next(60)
    relayed = traffic.relayed(sys.executable, "-m", "mcp_server_time")
    config = f"model_name='m', api_key='sk-test', base_url={openai_server.base_url!r}"
    code = (
        "import sys\n"
        "from prefect_beluga import llms\n"
        "from prefect_beluga.agents import Agent\n"
        "from prefect_beluga.core._substeps import InlineSubsteps, use_substeps\n"
        "from prefect_beluga.mcp import MCPServer\n"
        f"llm = llms.OpenAIChatModel(llms.Config({config}))\n"
        f"server = MCPServer(command={relayed['command']!r}, args={relayed['args']!r})\n"
        "with use_substeps(InlineSubsteps()):\n"
        "    Agent(llm, tools=[server]).invoke('Time?')\n"
    )
    child = subprocess.Popen([sys.executable, "-c", code])
    with reaped(child):
        what = "the agent process to open the session and start the model turn"
        eventually(openai_server.chat_requests, what, timeout=60, interval=0.05, process=child)
        assert traffic.count("tools/list") == 1 and len(traffic.alive(wait=0)) == 2
        child.kill()
        child.wait(10)
    assert traffic.alive(wait=10) == []


def test_finished_mcp_calls_are_read_back_in_a_retried_flow_run(openai_server, tmp_path):
    traffic = MCPTraffic(tmp_path / "time.log")
    agent = Agent(chat_model(openai_server), tools=[time_server(traffic)], name="durable-clock")
    openai_server.reply_with({"tool_calls": [call("get_current_time", timezone="UTC")]}, "Done.")
    attempts = []

    @flow(name="mcp-retried", retries=1)
    async def retried():
        result = await agent.ainvoke("Time?")
        attempts.append(result["output"])
        if len(attempts) == 1:
            raise RuntimeError("the flow fails after the agent finished")
        return result

    result = asyncio.run(retried())
    assert result["output"] == "Done." and attempts == ["Done.", "Done."]
    assert traffic.count("tools/call") == 1  # the second attempt read the call back
    assert len(openai_server.chat_requests()) == 2
    assert traffic.alive() == []


async def test_mcp_tool_calls_stream_as_tool_events(openai_server, tmp_path):
    traffic = MCPTraffic(tmp_path / "time.log")
    agent = Agent(chat_model(openai_server), tools=[time_server(traffic)], name="streamer")
    openai_server.reply_with({"tool_calls": [call("get_current_time", id="call_1", timezone="UTC")]}, "Noon.")
    events = [e async for e in Chain([agent], name="mcp-stream").astream({"input": "Time?"}, tokens=True)]
    [started] = [e["__tool_call__"] for e in events if "__tool_call__" in e]
    [finished] = [e["__tool_result__"] for e in events if "__tool_result__" in e]
    assert started == {"node": "streamer", "tool": "get_current_time", "id": "call_1", "arguments": {"timezone": "UTC"}}
    assert finished["ok"] is True and json.loads(finished["content"])["timezone"] == "UTC"


def test_mcp_server_options_are_checked_and_names_must_not_clash(openai_server, tmp_path):
    for options, message in [
        ({}, "exactly one of `command`"),
        ({"command": "x", "url": "http://h/mcp"}, "got both"),
        ({"url": "ftp://h"}, "http"),
        ({"url": "http://h/mcp", "args": ["a"]}, "go with `command`"),
        ({"command": "x", "headers": {"a": "b"}}, "go with `url`"),
        ({"command": "x", "include": "git_log"}, "include must be a list"),
        ({"command": "x", "prefix": "a.b"}, "prefix"),
        ({"command": "x", "timeout": 0}, "timeout"),
    ]:
        with pytest.raises(ValidationError, match=message):
            MCPServer(**options)
    traffic = MCPTraffic(tmp_path / "time.log")

    @tool
    def get_current_time() -> str:
        """A clash."""
        return "never"

    agent = Agent(chat_model(openai_server), tools=[get_current_time, time_server(traffic)])
    with pytest.raises(ValidationError, match="prefix"):
        agent.invoke("Time?")
    assert traffic.alive() == []
    # the server is part of the agent's cache key; its secrets are not
    a = Agent(chat_model(openai_server), tools=[MCPServer(command="x", env={"KEY": "one"})])
    b = Agent(chat_model(openai_server), tools=[MCPServer(command="x", env={"KEY": "two"})])
    c = Agent(chat_model(openai_server), tools=[MCPServer(command="y")])
    assert a.cache_key() == b.cache_key() != c.cache_key()


# -- approvals in a workflow (module level: the workflow runs in this process's background runner) ---


async def approval_job(state: dict) -> dict:
    llm = llms.OpenAIChatModel(llms.Config(model_name="gpt-4o-mini", api_key="sk-test", base_url=state["base_url"]))
    server = MCPServer(**MCPTraffic(state["log"]).relayed(sys.executable, "-m", "mcp_server_time"),
                       requires_approval=["get_current_time"])
    result = await Agent(llm, tools=[server], name="approving").ainvoke({"input": "Time?"})
    return {"output": result["output"], "tools": [m.content for m in result["messages"] if isinstance(m, ToolMessage)]}


approval_workflow = Orchestrator().create_workflow(approval_job, workflow_id="test-mcp-approval")


def test_an_mcp_tool_requiring_approval_waits_for_the_signal(openai_server, tmp_path):
    log = tmp_path / "time.log"
    openai_server.reply_with({"tool_calls": [call("get_current_time", timezone="UTC")]}, "Approved and done.")
    workflow_id, run_id = approval_workflow.execute({"base_url": openai_server.base_url, "log": str(log)})

    def paused() -> bool:
        status = approval_workflow.status(run_id)
        assert status == "PAUSED", status
        return True

    eventually(paused, "the run to pause for approval", timeout=60, interval=0.1)
    traffic = MCPTraffic(log)
    assert traffic.count("tools/list") == 1 and traffic.count("tools/call") == 0  # not before approval
    approval_workflow.signal(run_id, "approve:get_current_time", {"approved": True})
    result = approval_workflow.get_result(workflow_id, run_id, timeout=60)
    assert result["output"] == "Approved and done."
    assert json.loads(result["tools"][0])["timezone"] == "UTC"
    assert traffic.count("tools/call") == 1 and traffic.alive() == []


# -- a killed and resumed workflow (module level: a child process imports this file) -------------


@tool
def gated(item: str) -> str:
    """Waits for the gate file next to the relay's log (the first attempt waits to be killed)."""
    gate = Path(os.environ["BELUGA_MCP_TEST_GATE"])
    with open(gate.with_suffix(".log"), "a") as f:
        f.write(f"gated:{item} {os.getpid()}\n")
    while not gate.exists():
        time.sleep(0.05)
    return f"gated {item}"


async def resumable_job(state: dict) -> dict:
    llm = llms.OpenAIChatModel(llms.Config(model_name="gpt-4o-mini", api_key="sk-test", base_url=state["base_url"]))
    server = MCPServer(**MCPTraffic(state["log"]).relayed(sys.executable, "-m", "mcp_server_time"))
    result = await Agent(llm, tools=[server, gated], name="resumable").ainvoke({"input": "Time?"})
    return {"output": result["output"], "tools": [m.content for m in result["messages"] if isinstance(m, ToolMessage)]}


resumable_workflow = Orchestrator().create_workflow(resumable_job, workflow_id="test-mcp-resumable")


def test_a_killed_and_resumed_workflow_reads_a_finished_mcp_call_back(openai_server, tmp_path, monkeypatch):
    """The child process runs the workflow; turn 1 calls the time server and `gated` at once;
    the child is SIGKILLed once the MCP call's task run is Completed, while `gated` waits. The
    retried run (in this process) reads the model turn and the MCP call back: one tools/call."""
    log, gate = tmp_path / "time.log", tmp_path / "gate"
    monkeypatch.setenv("BELUGA_MCP_TEST_GATE", str(gate))  # for the resumed run, in this process
    traffic = MCPTraffic(log)
    openai_server.reply_with(
        {"tool_calls": [call("get_current_time", timezone="Asia/Tokyo"), call("gated", item="g")]}, "Both done.")
    env = {**os.environ, "PREFECT_API_URL": PREFECT_API_URL.value(), "BELUGA_MCP_TEST_GATE": str(gate),
           "PREFECT_LOCAL_STORAGE_PATH": str(PREFECT_LOCAL_STORAGE_PATH.value()),
           "PYTHONPATH": os.pathsep.join([str(HERE), os.environ.get("PYTHONPATH", "")])}
    code = (
        "import test_mcp as t, time\n"
        f"wid, rid = t.resumable_workflow.execute({{'base_url': {openai_server.base_url!r}, 'log': {str(log)!r}}})\n"
        "print(rid, flush=True)\n"
        "time.sleep(600)\n"
    )
    child = subprocess.Popen([sys.executable, "-c", code], env=env, stdout=subprocess.PIPE, text=True)
    with reaped(child):
        run_id = child.stdout.readline().strip()
        assert run_id, "the child did not start the run"

        def both_started() -> bool:
            # the MCP call is Completed on the API only once its result is stored: wait for that
            runs = asyncio.run(task_runs(run_id, expected=1, timeout=0))
            assert any(r.name == "get_current_time" and r.state_type.value == "COMPLETED" for r in runs), (
                "the MCP call never completed"
            )
            gated_log = gate.with_suffix(".log")
            assert gated_log.exists() and "gated:g" in gated_log.read_text(), "`gated` never started"
            return True

        eventually(both_started, "the MCP call to complete and `gated` to start", timeout=120, process=child)
        assert traffic.count("tools/call") == 1
        child.send_signal(signal.SIGKILL)
        child.wait(10)
    assert traffic.alive(wait=10) == []  # the killed process's server ended with its stdin
    gate.touch()
    resumable_workflow.retry(run_id)
    result = resumable_workflow.get_result("test-mcp-resumable", run_id, timeout=120)
    assert result["output"] == "Both done."
    now, gated_ = result["tools"]
    assert json.loads(now)["timezone"] == "Asia/Tokyo" and gated_ == "gated g"
    # the finished MCP call was read back: the server was asked once, by the killed process;
    # the resumed run opened a session of its own (the tools are listed for its model turn)
    assert traffic.count("tools/call") == 1
    assert traffic.handshakes() == 2
    # `gated`, unfinished when the child was killed, ran again, here; turn 1 was read back
    runs = [line.split() for line in gate.with_suffix(".log").read_text().splitlines()]
    assert runs == [["gated:g", str(child.pid)], ["gated:g", str(os.getpid())]]
    assert len(openai_server.chat_requests()) == 2
    assert traffic.alive() == []


# -- Runnables and Workflows as MCP tools, served by `python -m prefect_beluga.mcp` -------------------


async def _shout(state: dict) -> dict:
    return {"output": state["input"].upper() + "!"}


#: Shouts its input.
shout = RunnableCallable(_shout, name="shout")


async def _fail(state: dict) -> dict:
    raise RuntimeError(f"cannot handle {state['input']!r}")


failing = RunnableCallable(_fail, name="failing")


async def _sleepy(state: dict) -> dict:
    await asyncio.sleep(float(state["input"]))
    return {"output": "woke up"}


sleepy = RunnableCallable(_sleepy, name="sleepy")


async def _count_words(state: dict) -> dict:
    return {"words": len(state["input"].split())}


count_words = Orchestrator().create_workflow(_count_words, workflow_id="count-words",
                                             description="Count the words of a text.")


def served_env() -> dict[str, str]:
    env = dict(os.environ)
    env.update(PREFECT_API_URL=PREFECT_API_URL.value(), BELUGA_MCP_TOKEN=TOKEN,
               PYTHONPATH=os.pathsep.join([str(HERE), env.get("PYTHONPATH", "")]))
    return env


TARGETS = ["--target", "test_mcp:shout", "--target", "test_mcp:failing", "--target", "test_mcp:count_words",
           "--target", "test_mcp:sleepy"]


async def test_serve_over_stdio_is_called_by_the_official_client():
    params = StdioServerParameters(command=sys.executable, args=["-m", "prefect_beluga.mcp", *TARGETS],
                                   env=served_env(), cwd=str(HERE))
    progress: list[tuple[float, str | None]] = []

    async def on_progress(done: float, total: float | None, message: str | None) -> None:
        progress.append((done, message))

    async with Client(params) as client:
        tools = {t.name: t for t in (await client.list_tools()).tools}
        assert set(tools) == {"shout", "failing", "count-words", "sleepy"}
        assert tools["count-words"].description == "Count the words of a text."
        assert tools["shout"].input_schema["properties"]["input"]["type"] == "string"
        result = await client.call_tool("shout", {"input": "hello"}, progress_callback=on_progress)
        assert not result.is_error and json.loads(result.content[0].text) == {"output": "HELLO!"}
        assert result.structured_content == {"output": "HELLO!"}
        assert progress == [(0.0, "shout: started"), (1.0, "shout: done")]
        failed = await client.call_tool("failing", {"input": "x"})
        assert failed.is_error and failed.content[0].text == "RuntimeError: cannot handle 'x'"
        bad = await client.call_tool("shout", {})
        assert bad.is_error and "field 'input' is required" in bad.content[0].text
        progress.clear()
        words = await client.call_tool("count-words", {"input": "one two three"}, progress_callback=on_progress)
        assert json.loads(words.content[0].text) == {"words": 3}
        assert progress[0][1].startswith("count-words: run ") and progress[0][1].endswith(" started")
        # a cancelled call ends its flow run Cancelled (not Crashed)
        with anyio.move_on_after(2):
            await client.call_tool("sleepy", {"input": "60"})
        # (the session's API holds every test's runs: read this test's by their flows' names)
        named = FlowFilter(name=FlowFilterName(any_=["shout", "failing", "count-words", "sleepy"]))
        async with get_client() as prefect:

            async def sleeper_ended() -> tuple:
                flows = {f.id: f.name for f in await prefect.read_flows(flow_filter=named)}
                runs = await prefect.read_flow_runs(flow_filter=named)
                [sleeper] = [r for r in runs if flows.get(r.flow_id) == "sleepy"]
                assert sleeper.state.is_final(), sleeper.state
                return flows, runs, sleeper

            flows, runs, sleeper = await aeventually(sleeper_ended, "the `sleepy` run to end", timeout=20)
        assert sleeper.state_type.value == "CANCELLED", sleeper.state
    # each call was a Prefect flow run named after the tool
    assert {"shout", "failing", "count-words"} <= {flows.get(r.flow_id) for r in runs}


def test_serve_over_http_needs_the_bearer_token(tmp_path):
    from prefect_beluga.testing.mcp import _free_port

    port = _free_port()
    child = subprocess.Popen([sys.executable, "-m", "prefect_beluga.mcp", "--transport", "http", "--port", str(port),
                              "--target", "test_mcp:shout"], env=served_env(), cwd=str(HERE))
    with reaped(child):
        url = f"http://127.0.0.1:{port}/mcp"

        body = json.dumps({"jsonrpc": "2.0", "id": 1, "method": "tools/list"}).encode()

        def answered() -> bool:  # without the token: 401 (pytest.fail ends the wait at once)
            try:
                urllib.request.urlopen(urllib.request.Request(url, data=body, method="POST"), timeout=5)
            except urllib.error.HTTPError as exc:
                if exc.code != 401:
                    pytest.fail(f"a request without the token got HTTP {exc.code}, not 401")
                return True
            except OSError:
                return False  # not listening yet
            pytest.fail("a request without the token got in")

        eventually(answered, "the server to start", timeout=60, interval=0.1, process=child)

        async def talk() -> str:
            server = MCPServer(url=url, headers={"Authorization": f"Bearer {TOKEN}"})
            async with Client(server._transport()) as client:
                result = await client.call_tool("shout", {"input": "over http"})
                return result.content[0].text

        assert json.loads(asyncio.run(talk())) == {"output": "OVER HTTP!"}


def test_serve_checks_its_targets():
    from prefect_beluga.mcp import create_server

    with pytest.raises(ValidationError, match="at least one"):
        create_server()
    with pytest.raises(ValidationError, match="must be a Runnable"):
        create_server(42)
    with pytest.raises(ValidationError, match="two targets are named 'shout'"):
        create_server(shout, shout)
    assert create_server(tool(shout, name="loud", description="Louder.")) is not None


# -- flows/agent.py with MCP servers -----------------------------------------------------------------


def test_the_agent_flow_takes_mcp_servers_from_a_block_and_a_client_config(openai_server, tmp_path):
    sys.path.insert(0, str(HERE.parents[1] / "flows"))
    from agent import agent_answer

    from prefect_beluga.blocks import ChatModelBlock, EmbeddedVectorStoreBlock, EmbedderBlock, OpenAICredentials
    from prefect_beluga.mcp import MCPServerBlock

    suffix = os.urandom(4).hex()
    stores = {"embedder_block": f"emb-{suffix}", "vector_store_block": f"store-{suffix}"}
    EmbedderBlock(provider="hashing").save(stores["embedder_block"])
    EmbeddedVectorStoreBlock(path=str(tmp_path / "store.npz")).save(stores["vector_store_block"])
    ChatModelBlock(
        provider="openai", model_name="gpt-4o-mini",
        credentials=OpenAICredentials(api_key="sk-test", base_url=openai_server.base_url),
    ).save(f"chat-{suffix}")
    block_traffic, config_traffic = MCPTraffic(tmp_path / "block.log"), MCPTraffic(tmp_path / "config.log")
    MCPServerBlock(**block_traffic.relayed(sys.executable, "-m", "mcp_server_time", "--local-timezone", "UTC"),
                   prefix="block_").save(f"time-{suffix}")
    config = tmp_path / "claude_desktop_config.json"
    relayed = config_traffic.relayed(sys.executable, "-m", "mcp_server_time", "--local-timezone", "UTC")
    config.write_text(json.dumps({"mcpServers": {"clock": relayed}}))
    openai_server.reply_with(
        {"tool_calls": [call("block_get_current_time", timezone="Asia/Tokyo"),
                        call("get_current_time", timezone="UTC")]},
        "Both clocks answered.",
    )

    result = asyncio.run(agent_answer("What time is it?", chat_model_block=f"chat-{suffix}",
                                      mcp_server_blocks=[f"time-{suffix}"], mcp_config=str(config), **stores))
    assert result["output"] == "Both clocks answered." and result["searches"] == []
    tools = {t["function"]["name"] for t in openai_server.chat_requests()[0].body["tools"]}
    assert {"search_docs", "block_get_current_time", "get_current_time"} <= tools
    answers = [json.loads(m["content"]) for m in openai_server.tool_results(1)]
    assert [a["timezone"] for a in answers] == ["Asia/Tokyo", "UTC"]
    for traffic in (block_traffic, config_traffic):
        assert traffic.count("tools/call") == 1 and traffic.alive() == []
