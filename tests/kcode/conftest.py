"""Fixtures shared by the kcode tests: the scripted OpenAI-compatible server on 127.0.0.1."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.kcode.openai_server import ScriptedServer


@pytest.fixture
def openai_server() -> Iterator[ScriptedServer]:
    """A running scripted server with an empty script; tests `add()` the responses they need."""
    with ScriptedServer() as server:
        yield server
