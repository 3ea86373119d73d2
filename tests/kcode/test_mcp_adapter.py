"""The pieces between an MCP server and the model: tool names, schemas, results as text, and status lines."""

from __future__ import annotations

import base64
from typing import Any

from mcp_types import (
    AudioContent,
    BlobResourceContents,
    CallToolResult,
    EmbeddedResource,
    ImageContent,
    ResourceLink,
    TextContent,
    TextResourceContents,
)

from kcode.backends.remote import check_moonshot_tools
from kcode.mcp.results import NO_OUTPUT, tool_result
from kcode.mcp.schema import JSON_TYPES, adapt_input_schema
from kcode.mcp.status import ServerStatus, status_lines
from kcode.mcp.tools import kcode_tool_name
from tools.schema import argument_problems


def test_names_fit_what_provider_apis_accept() -> None:
    assert kcode_tool_name("docs", "search") == "mcp__docs__search"
    assert kcode_tool_name("docs", "files.read/v2") == "mcp__docs__files_read_v2"
    long_a, long_b = kcode_tool_name("docs", "x" * 80 + "a"), kcode_tool_name("docs", "x" * 80 + "b")
    assert len(long_a) == len(long_b) == 64 and long_a != long_b


def test_schemas_get_the_types_they_already_imply() -> None:
    schema = adapt_input_schema({
        "$schema": "http://json-schema.org/draft-07/schema#",
        "properties": {
            "limit": {"anyOf": [{"type": "integer"}, {"type": "null"}], "default": None},
            "mode": {"enum": ["fast", "slow"]},
            "anything": {"description": "any JSON value"},
            "tags": {"type": "array", "items": {"oneOf": [{"type": "string"}, {"type": "number"}]}},
            "nested": {"type": "object", "properties": {"deep": {"const": 3}}},
            "loose": {"type": "any"},
            "half": {"type": ["string", "whatever"]},
        },
        "required": ["mode"],
    })
    props: dict[str, Any] = schema["properties"]
    assert "$schema" not in schema and schema["type"] == "object"
    assert props["limit"]["type"] == ["integer", "null"] and props["limit"]["anyOf"]  # the branches stay
    assert props["mode"]["type"] == "string"
    assert props["anything"]["type"] == list(JSON_TYPES)
    assert props["tags"]["items"]["type"] == ["string", "number"]
    assert props["nested"]["properties"]["deep"]["type"] == "integer"
    assert props["loose"]["type"] == list(JSON_TYPES) and props["half"]["type"] == "string"
    check_moonshot_tools([{"type": "function", "function": {"name": "t", "parameters": schema}}])  # no raise
    assert argument_problems({"mode": "fast", "limit": None, "anything": {"a": [1]}}, schema) == []
    assert argument_problems({"mode": "fast", "limit": "ten"}, schema)


def test_a_schema_without_properties_still_describes_an_object() -> None:
    assert adapt_input_schema(None) == {"type": "object", "properties": {}}


def test_results_become_text_the_model_can_read() -> None:
    png = base64.b64encode(b"\x89PNG" + bytes(96)).decode()
    result = tool_result(CallToolResult(content=[
        TextContent(text="first"),
        ImageContent(data=png, mime_type="image/png"),
        AudioContent(data=base64.b64encode(bytes(10)).decode(), mime_type="audio/wav"),
        EmbeddedResource(resource=TextResourceContents(uri="file:///notes.md", text="# Notes")),
        EmbeddedResource(resource=BlobResourceContents(uri="file:///a.bin", blob=png, mime_type="application/x")),
        ResourceLink(uri="file:///big.log", name="big.log", description="the build log"),
    ]))
    assert not result.is_error
    assert result.output.splitlines() == [
        "first",
        "[image: image/png, 100 bytes, not shown]",
        "[audio: audio/wav, 10 bytes, not shown]",
        "[resource file:///notes.md]",
        "# Notes",
        "[resource file:///a.bin: application/x, 100 bytes, not shown]",
        "[link to resource file:///big.log (big.log): the build log]",
    ]


def test_errors_structured_and_empty_results() -> None:
    failed = tool_result(CallToolResult(content=[TextContent(text="no such issue")], is_error=True))
    assert failed.is_error and failed.output == "no such issue"
    structured = tool_result(CallToolResult(content=[], structured_content={"count": 2}))
    assert structured.output == '{\n  "count": 2\n}'
    assert tool_result(CallToolResult(content=[])).output == NO_OUTPUT


def test_status_lines() -> None:
    lines = status_lines([
        ServerStatus("docs", "connected", "uvx docs-mcp", trusted=True,
                     tools=(("search", "Search the docs.\nMore words."), ("fetch_page", ""))),
        ServerStatus("tracker", "failed", "https://x.example/mcp", detail="did not start within 5 s"),
        ServerStatus("old", "disabled", "old-mcp"),
    ])
    assert lines == [
        "docs (uvx docs-mcp, trusted): connected, 2 tools",
        "  search      Search the docs.",
        "  fetch_page",
        "tracker (https://x.example/mcp): failed: did not start within 5 s",
        "old (old-mcp): disabled",
    ]
    assert status_lines([])[0].startswith("No MCP servers are configured")
