"""Checks a call's arguments against the tool's JSON schema, in words the model can act on.

Covers the subset of JSON Schema that tool declarations use: an object of typed properties, required
names, enums and array items. Extra arguments are always refused: a misspelt name is a real mistake.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

_JSON_TYPES: dict[str, tuple[type, ...]] = {
    "string": (str,),
    "integer": (int,),
    "number": (int, float),
    "boolean": (bool,),
    "array": (list,),
    "object": (dict,),
    "null": (type(None),),
}


def argument_problems(arguments: Mapping[str, Any], schema: Mapping[str, Any]) -> list[str]:
    """Every problem with `arguments`, one sentence each; empty when they fit `schema`."""
    properties: Mapping[str, Any] = schema.get("properties", {})
    problems = [f"missing required argument '{name}'"
                for name in schema.get("required", []) if name not in arguments]
    for name, value in arguments.items():
        if name not in properties:
            allowed = ", ".join(properties) or "none"
            problems.append(f"unexpected argument '{name}' (allowed: {allowed})")
            continue
        problems.extend(_value_problems(name, value, properties[name]))
    return problems


def _value_problems(name: str, value: Any, schema: Mapping[str, Any]) -> list[str]:
    expected = schema.get("type")
    if expected is not None and not _has_type(value, expected):
        wanted = " or ".join(expected) if isinstance(expected, list) else expected
        return [f"argument '{name}' must be {wanted}, got {_json_type_name(value)} {_preview(value)}"]
    if "enum" in schema and value not in schema["enum"]:
        choices = ", ".join(repr(choice) for choice in schema["enum"])
        return [f"argument '{name}' must be one of {choices}, got {_preview(value)}"]
    if isinstance(value, list) and "items" in schema:
        problems: list[str] = []
        for index, item in enumerate(value):
            problems.extend(_value_problems(f"{name}[{index}]", item, schema["items"]))
        return problems
    return []


def _has_type(value: Any, expected: str | list[str]) -> bool:
    names = expected if isinstance(expected, list) else [expected]
    for type_name in names:
        if type_name not in _JSON_TYPES:
            raise ValueError(f"unsupported JSON schema type {type_name!r}")
        # bool is an int in Python but not in JSON.
        if isinstance(value, bool) and type_name in ("integer", "number"):
            continue
        if isinstance(value, _JSON_TYPES[type_name]):
            return True
    return False


def _json_type_name(value: Any) -> str:
    for type_name in ("boolean", "integer", "number", "string", "array", "object", "null"):
        if _has_type(value, type_name):
            return type_name
    return type(value).__name__


def _preview(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."
