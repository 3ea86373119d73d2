"""An MCP tool result as the text the model reads: text as is, everything else described in words.

The model reads text only, so an image or audio clip says what it was (its type and size), never its bytes,
and an embedded resource shows its text, or, when binary, what it is. The toolset clamps the whole, so a
huge result is cut and spilled to a file like a long bash output.
"""

from __future__ import annotations

import base64
import binascii
import json

from mcp_types import (
    AudioContent,
    BlobResourceContents,
    CallToolResult,
    ContentBlock,
    EmbeddedResource,
    ImageContent,
    ResourceLink,
    TextContent,
)

from tools.base import ToolResult

NO_OUTPUT = "(the tool returned nothing)"


def tool_result(result: CallToolResult) -> ToolResult:
    """What the call returned; an `isError` result is an error result the model can react to."""
    parts = [_block_text(block) for block in result.content]
    if not parts and result.structured_content is not None:
        parts.append(json.dumps(result.structured_content, ensure_ascii=False, indent=2))
    text = "\n".join(parts) if parts else NO_OUTPUT
    return ToolResult(output=text, is_error=result.is_error)


def _block_text(block: ContentBlock) -> str:
    if isinstance(block, TextContent):
        return block.text
    if isinstance(block, ImageContent | AudioContent):
        kind = "image" if isinstance(block, ImageContent) else "audio"
        return f"[{kind}: {block.mime_type}, {_decoded_size(block.data):,} bytes, not shown]"
    if isinstance(block, EmbeddedResource):
        resource = block.resource
        if isinstance(resource, BlobResourceContents):
            return (f"[resource {resource.uri}: {resource.mime_type or 'binary data'}, "
                    f"{_decoded_size(resource.blob):,} bytes, not shown]")
        return f"[resource {resource.uri}]\n{resource.text}"
    if isinstance(block, ResourceLink):
        about = f": {block.description}" if block.description else ""
        return f"[link to resource {block.uri} ({block.name}){about}]"
    return f"[{type(block).__name__} content, not shown]"


def _decoded_size(data: str) -> int:
    """Bytes behind base64 `data`; its length's three quarters when it is not valid base64."""
    try:
        return len(base64.b64decode(data, validate=True))
    except (binascii.Error, ValueError):
        return len(data) * 3 // 4
