"""Which of a request's tools a generated call is for, when the call's header does not say.

K2 served by other stacks sometimes writes a call header that is not `functions.NAME:IDX` (a bare `0`, a
client-style `call_3`). The request's tool list can still name the function: when it declares a single
tool, or when exactly one tool's parameters fit the call's arguments. "Fit" means every argument key is
one of the tool's declared properties and every required property is present. Equal key sets would be
stricter, but the model often leaves optional parameters out, and those calls would be lost; demanding
that exactly one tool fits keeps the guess safe when tools share parameter names.

The tool list comes from the client, so nothing here raises on it: entries that are not well-formed
OpenAI function tools are skipped.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class _Signature:
    name: str
    properties: frozenset[str]
    required: frozenset[str]

    def fits(self, keys: frozenset[str]) -> bool:
        return keys <= self.properties and self.required <= keys


class ToolSignatures:
    """The function names and parameter names of a request's tools, for naming a call by its arguments."""

    def __init__(self, tools: Sequence[Mapping[str, Any]] | None) -> None:
        by_name: dict[str, _Signature] = {}
        for tool in tools or ():
            signature = _signature(tool)
            if signature is not None:
                by_name.setdefault(signature.name, signature)
        self._signatures = tuple(by_name.values())

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(signature.name for signature in self._signatures)

    @property
    def sole_name(self) -> str | None:
        """The function's name when the request declares exactly one; any call must be for it."""
        return self._signatures[0].name if len(self._signatures) == 1 else None

    def name_for(self, arguments: str) -> str | None:
        """The only tool the arguments (a JSON object) fit, or None when they fit none, several, or are no object."""
        if self.sole_name is not None:
            return self.sole_name
        try:
            value = json.loads(arguments)
        except (json.JSONDecodeError, RecursionError):
            return None
        if not isinstance(value, dict):
            return None
        keys = frozenset(value)
        fitting = [signature.name for signature in self._signatures if signature.fits(keys)]
        return fitting[0] if len(fitting) == 1 else None


def _signature(tool: Any) -> _Signature | None:
    """An OpenAI tool `{"type": "function", "function": {"name", "parameters"}}`, or None when it is not one."""
    function = tool.get("function") if isinstance(tool, Mapping) else None
    if not isinstance(function, Mapping) or tool.get("type", "function") != "function":
        return None
    name = function.get("name")
    if not isinstance(name, str) or not name:
        return None
    parameters = function.get("parameters")
    parameters = parameters if isinstance(parameters, Mapping) else {}
    properties = parameters.get("properties")
    required = parameters.get("required")
    return _Signature(
        name,
        frozenset(properties) if isinstance(properties, Mapping) else frozenset(),
        frozenset(r for r in required if isinstance(r, str)) if isinstance(required, list) else frozenset(),
    )
