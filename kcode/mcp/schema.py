"""A server's input schema made acceptable to every provider kcode talks to, without changing what it allows.

Moonshot refuses a tool whose properties lack a `type` (see `check_moonshot_tools`), and one such property
would fail every request of the session. A server's schema often has them: `Optional[int]` becomes
`anyOf: [{type: integer}, {type: null}]`, and an `Any` argument has no keyword at all. Each gets the `type`
its branches already imply (the union of their types; all seven JSON types when nothing narrows it), so
the schema admits exactly what it did before. A type name JSON Schema does not have (`"any"`) is dropped the
same way, since kcode's argument check would not know what it means.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import Any

JSON_TYPES = ("string", "number", "integer", "boolean", "array", "object", "null")
_BRANCHES = ("anyOf", "oneOf", "allOf")


def adapt_input_schema(schema: Mapping[str, Any] | None) -> dict[str, Any]:
    """An object schema whose every property (nested ones and array items too) names its `type`."""
    adapted: dict[str, Any] = copy.deepcopy(dict(schema or {}))
    adapted.pop("$schema", None)
    adapted["type"] = "object"
    if not isinstance(adapted.get("properties"), dict):
        adapted["properties"] = {}
    _type_properties(adapted)
    return adapted


def _type_properties(schema: dict[str, Any]) -> None:
    properties = schema.get("properties")
    if not isinstance(properties, dict):
        return
    for name, prop in list(properties.items()):
        if not isinstance(prop, dict):
            prop = properties[name] = {}
        _give_type(prop)
        _type_properties(prop)
        items = prop.get("items")
        if isinstance(items, dict):
            _give_type(items)
            _type_properties(items)


def _give_type(schema: dict[str, Any]) -> None:
    """Set `type` where it is missing, and keep only the JSON types of one that is there."""
    kind = schema.get("type")
    if kind is None:
        schema["type"] = _implied_types(schema)
        return
    known = [name for name in (kind if isinstance(kind, list) else [kind]) if name in JSON_TYPES]
    if not known:
        schema["type"] = list(JSON_TYPES)
    elif known != kind and [kind] != known:
        schema["type"] = known[0] if len(known) == 1 else known


def _implied_types(schema: Mapping[str, Any]) -> str | list[str]:
    """The types a `type`-less schema admits, read off its `anyOf`/`oneOf` branches, its `enum` or `const`."""
    found: list[str] = []
    for key in _BRANCHES:
        for branch in schema.get(key) or []:
            kind = branch.get("type") if isinstance(branch, Mapping) else None
            if kind is None:
                return list(JSON_TYPES)
            found.extend(kind if isinstance(kind, list) else [kind])
    values = schema.get("enum", [schema["const"]] if "const" in schema else None)
    if not found and values:
        found = [_json_type(value) for value in values]
    unique = [kind for kind in JSON_TYPES if kind in found]
    if not unique:
        return list(JSON_TYPES)
    return unique[0] if len(unique) == 1 else unique


def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "number"
    if isinstance(value, str):
        return "string"
    return "array" if isinstance(value, list) else "object"
