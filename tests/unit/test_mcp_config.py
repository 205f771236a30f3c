"""prefect_beluga.mcp without servers: configuration, the block, arguments, result rendering, secrets."""

from __future__ import annotations

import json

import pytest
from mcp import types
from prefect.testing.standard_test_suites import BlockStandardTestSuite
from pydantic import SecretStr

from prefect_beluga import ValidationError
from prefect_beluga.mcp import MCPServer, MCPServerBlock, server_from_config, servers_from_config
from prefect_beluga.mcp._session import render_content
from prefect_beluga.tools import ToolArgumentsError

DESKTOP = {
    "mcpServers": {
        "time": {"command": "uvx", "args": ["mcp-server-time"], "env": {"TZ": "UTC"}},
        "docs": {"type": "http", "url": "https://docs.example.com/mcp", "headers": {"Authorization": "Bearer s3cret"},
                 "include": ["search"], "timeout": 10},
        "old": {"command": "x", "disabled": True},
    }
}


def test_servers_from_a_desktop_client_configuration(tmp_path):
    time_server, docs = servers_from_config(DESKTOP, prefix_names=True)
    assert (time_server.name, time_server.command, time_server.args, time_server.prefix) == (
        "time", "uvx", ("mcp-server-time",), "time_")
    assert time_server.env == {"TZ": SecretStr("UTC")}
    assert (docs.url, docs.include, docs.timeout, docs.prefix) == (
        "https://docs.example.com/mcp", frozenset({"search"}), 10, "docs_")
    assert docs.headers["Authorization"].get_secret_value() == "Bearer s3cret"
    assert "s3cret" not in repr(docs) and "s3cret" not in str(vars(docs))
    path = tmp_path / "mcp.json"
    path.write_text(json.dumps(DESKTOP))
    assert [s.name for s in servers_from_config(path)] == ["time", "docs"]
    for bad, message in [
        ({"servers": 3}, "mcpServers"),
        ({"mcpServers": {"a": {"type": "sse", "url": "http://h/sse"}}}, "'sse' is not supported"),
        ({"mcpServers": {"a": {"command": "x", "colour": "red"}}}, r"unknown key\(s\) \['colour'\]"),
        ({"mcpServers": {"a": {"args": ["x"]}}}, "MCP server 'a': MCPServer needs exactly one"),
    ]:
        with pytest.raises(ValidationError, match=message):
            servers_from_config(bad)
    with pytest.raises(ValidationError, match="cannot read MCP configuration"):
        servers_from_config(tmp_path / "missing.json")
    assert server_from_config({"url": "http://127.0.0.1:1/mcp"}).name == "127.0.0.1:1"


class TestMCPServerBlockStandards(BlockStandardTestSuite):
    @pytest.fixture
    def block(self):
        return MCPServerBlock


def test_the_block_builds_the_server_and_keeps_secrets_secret():
    block = MCPServerBlock(url="https://tools.example.com/mcp", headers={"Authorization": "Bearer s3cret"},
                           requires_approval=["delete"], prefix="tools_")
    server = block.get_server()
    assert (server.url, server.prefix, server.requires_approval) == (
        "https://tools.example.com/mcp", "tools_", frozenset({"delete"}))
    assert server.headers["Authorization"].get_secret_value() == "Bearer s3cret"
    assert "s3cret" not in repr(block) and "s3cret" not in block.model_dump_json()
    stdio = MCPServerBlock(command="mcp-server-git", args=["--repository", "/r"], env={"K": "v"}).get_server()
    assert (stdio.command, stdio.args) == ("mcp-server-git", ("--repository", "/r"))
    assert stdio.env["K"].get_secret_value() == "v"
    with pytest.raises(ValidationError, match="got both"):
        MCPServerBlock(command="x", url="http://h/mcp").get_server()


def test_tools_from_a_listing_arguments_and_approval():
    server = MCPServer(command="x", prefix="srv_", requires_approval=["danger"], exclude=["hidden"], timeout=5)
    schema = {"type": "object", "properties": {"q": {"type": "string"}}, "required": ["q"],
              "additionalProperties": False}
    search = server._tool_for(types.Tool(name="search", description="Search.", input_schema=schema))
    danger = server._tool_for(types.Tool(name="danger", input_schema={"type": "object"}))
    dotted = server._tool_for(types.Tool(name="a.b", input_schema={"type": "object"}))
    assert server._tool_for(types.Tool(name="hidden", input_schema={"type": "object"})) is None
    assert (search.name, search.remote_name, search.requires_approval, search.substep.timeout) == (
        "srv_search", "search", False, 5)
    assert search.to_openai() == {"type": "function", "function": {
        "name": "srv_search", "description": "Search.", "parameters": schema}}
    assert danger.requires_approval and danger.parameters == {"type": "object", "properties": {}}
    assert dotted.name == "srv_a_b" and dotted.remote_name == "a.b"
    # the same definition again: the same tool (and so the same Prefect task)
    assert server._tool_for(types.Tool(name="search", description="Search.", input_schema=schema)) is search
    assert search.parse_arguments('{"q": "x"}') == {"q": "x"}
    for bad, message in [("{", "not valid JSON"), ("[1]", "must be a JSON object"),
                         ("{}", "field 'q' is required"), ('{"q": "x", "k": 1}', "field 'k' is not an argument")]:
        with pytest.raises(ToolArgumentsError, match=message):
            search.parse_arguments(bad)


def test_results_become_the_tool_message_text():
    text = types.TextContent(type="text", text="hello")
    image = types.ImageContent(type="image", data="AAAA", mime_type="image/png")
    resource = types.EmbeddedResource(type="resource", resource=types.TextResourceContents(
        uri="file:///a.txt", text="contents"))
    assert render_content(types.CallToolResult(content=[text, image, resource])) == (
        "hello\n[image (image/png, about 3 bytes) returned by the tool; not shown]\ncontents")
    assert render_content(types.CallToolResult(content=[], structured_content={"n": 1})) == '{"n": 1}'
