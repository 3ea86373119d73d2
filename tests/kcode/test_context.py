"""Token counting and compaction: elision first, a model-written summary second, failures reported once."""

from __future__ import annotations

from pathlib import Path

import pytest

from kcode.agent.context import (
    CompactionSettings,
    CompactionSettingsError,
    Compactor,
    context_tokens,
    estimate_message_tokens,
    estimate_tokens,
)
from kcode.agent.conversation import Conversation
from kcode.agent.events import AgentError, Compacted, Event, Notice, UsageReport
from kcode.agent.loop import Agent
from kcode.agent.prompt import load_template, project_rules, system_prompt
from kcode.backends.base import Retrying, TextDelta, Usage
from kcode.errors import BackendError
from kcode.messages import Message, ToolCall, system, user
from tests.kcode.scripted import ScriptedBackend, answer, assert_consistent, calls, make_toolset, shell


def exchange(index: int, output_chars: int, text: str = "") -> list[Message]:
    """One assistant call and its tool result of `output_chars` characters."""
    call = ToolCall(id=f"old_{index}", name="bash", arguments=f'{{"command": "cat file{index}"}}')
    return [Message("assistant", content=text, tool_calls=(call,)),
            Message("tool", content=f"out{index} " + "o" * output_chars, tool_call_id=call.id, name="bash")]


def long_history(exchanges: int, output_chars: int, text: str = "") -> list[Message]:
    messages = [system("SYSTEM PROMPT"), user("TASK: make the parser faster")]
    for index in range(exchanges):
        messages += exchange(index, output_chars, text)
    return messages


def test_estimates_count_characters_and_a_per_message_overhead() -> None:
    assert estimate_tokens("") == 0
    assert estimate_tokens("x" * 35) == 10
    call = ToolCall("c1", "bash", "x" * 31)  # the name's 4 characters count too
    assert estimate_message_tokens(Message("assistant", "y" * 35, (call,))) == 10 + 10 + 4


def test_context_tokens_trust_the_api_count_and_estimate_only_what_came_after() -> None:
    conversation = Conversation([system("s" * 700), user("u" * 700)])
    tools = [{"type": "function", "function": {"name": "bash"}}]
    assert context_tokens(conversation, tools) > context_tokens(conversation, [])  # tools count before any usage

    conversation.note_usage(5000)
    conversation.append(Message("tool", "t" * 350, tool_call_id="c"))
    assert context_tokens(conversation, tools) == 5000 + 100 + 4

    conversation.replace([user("short")])
    assert conversation.anchor is None
    assert context_tokens(conversation, []) == estimate_message_tokens(user("short"))


def test_a_count_far_below_our_estimate_is_not_trusted_and_compaction_reports_a_shrink() -> None:
    history = long_history(2, 200, text="t" * 2000)
    conversation = Conversation(history)
    conversation.note_usage(15)  # a server that reports the same usage whatever it is sent
    own = sum(estimate_message_tokens(m) for m in history)
    assert context_tokens(conversation, []) == own

    backend = ScriptedBackend([[TextDelta("They discussed the parser."), Usage(10, 5)]])
    result = Compactor(backend).compact(conversation, [], force=True)
    assert result.problem is None and result.tokens_before == own > result.tokens_after


def test_elision_comes_first_and_keeps_the_newest_outputs_whole() -> None:
    backend = ScriptedBackend([])  # any summary request would fail the test
    compactor = Compactor(backend, CompactionSettings(keep_recent_outputs=3))
    backend.context_window = 10_000  # 8,500-token threshold; the history is ~23,000 tokens, ~3,000 after elision
    conversation = Conversation(long_history(10, 8000))
    assert compactor.needed(conversation, [])

    result = compactor.compact(conversation, [])

    assert result.problem is None and result.summary == "" and result.elided_outputs == 7
    outputs = [m.content for m in result.history if m.role == "tool"]
    assert outputs[:7] == ["[output elided: 8,005 chars; repeat the call to see it again]"] * 7
    assert [o[:4] for o in outputs[7:]] == ["out7", "out8", "out9"]
    assert result.tokens_after < 8500 <= result.tokens_before
    assert backend.requests == []
    assert_consistent(result.history)


def test_short_outputs_are_not_elided() -> None:
    compactor = Compactor(ScriptedBackend([]), CompactionSettings(keep_recent_outputs=0, min_elided_chars=300))
    history, elided = compactor._elide(tuple(long_history(2, 100)))
    assert elided == 0 and "o" * 100 in history[3].content


def test_a_summary_replaces_the_older_messages_when_elision_is_not_enough() -> None:
    rules = "Always run ruff before submitting."
    backend = ScriptedBackend([[TextDelta("draft"), Retrying(1, 3, 0.1, "503"), TextDelta("SUMMARY: parser work"),
                                Usage(3000, 50)]], context_window=10_000)
    compactor = Compactor(backend, CompactionSettings(keep_recent_share=0.25, summary_max_tokens=500), rules=rules)
    conversation = Conversation(long_history(10, 10, text="thinking " * 500))  # big texts, tiny outputs

    result = compactor.compact(conversation, [])

    assert result.problem is None
    request = backend.requests[0]
    assert request.tool_names == () and request.max_tokens == 500
    assert request.messages[0] == system(load_template("summary.md"))
    assert "TASK: make the parser faster" in request.messages[1].content
    assert "SYSTEM PROMPT" not in request.messages[1].content
    history = result.history
    assert history[0] == system("SYSTEM PROMPT")
    assert history[1].role == "user"
    assert "SUMMARY: parser work" in history[1].content and "draft" not in history[1].content
    assert rules in history[1].content
    assert history[2].role == "assistant"  # the kept tail starts with a call, never an orphan result
    assert history[-1] == conversation.messages[-1]
    assert 2 < len(history) < len(conversation)
    assert result.usage == Usage(3000, 50)
    assert result.tokens_after < compactor.threshold_tokens
    assert_consistent(history)


def test_a_forced_compaction_summarises_even_a_history_far_below_the_threshold() -> None:
    backend = ScriptedBackend([[TextDelta("SUMMARY: asked about the parser"), Usage(100, 10)]],
                              context_window=100_000)
    compactor = Compactor(backend, CompactionSettings())
    conversation = Conversation([system("SYSTEM PROMPT"), user("TASK " + "detail " * 300),
                                 Message("assistant", content="answer " * 300)])
    assert compactor.compact(conversation, []).summary == ""  # not forced: nothing to do
    assert backend.requests == []

    forced = compactor.compact(conversation, [], force=True)

    assert forced.problem is None
    assert [m.role for m in forced.history] == ["system", "user"]
    assert "SUMMARY: asked about the parser" in forced.history[1].content
    assert forced.tokens_after < forced.tokens_before


def test_a_failed_summary_keeps_what_elision_achieved_and_says_why() -> None:
    backend = ScriptedBackend([[BackendError("HTTP 500")]], context_window=10_000)
    conversation = Conversation(long_history(10, 2000, text="thinking " * 1000))

    result = Compactor(backend).compact(conversation, [])

    assert result.problem == "the summary request failed: HTTP 500"
    assert result.elided_outputs == 7 and result.changed
    assert "[output elided" in result.history[3].content


def test_a_summary_that_is_still_too_big_is_a_problem_but_applied_when_it_helps() -> None:
    backend = ScriptedBackend([[TextDelta("z" * 40_000)]], context_window=10_000)
    result = Compactor(backend).compact(Conversation(long_history(10, 10, text="thinking " * 1000)), [])
    assert result.problem is not None and "still" in result.problem
    assert result.summary  # applied anyway: it is smaller than what it replaced
    assert result.tokens_after < result.tokens_before


@pytest.mark.parametrize(("summary", "problem"), [
    ("", "the model's summary was empty"),
    ("z" * 200_000, "the model's summary was no shorter than what it would replace"),
])
def test_an_empty_or_bloated_summary_is_not_applied(summary: str, problem: str) -> None:
    backend = ScriptedBackend([[TextDelta(summary), Usage(9000, 900)]], context_window=10_000)
    conversation = Conversation(long_history(10, 10, text="thinking " * 1000))
    result = Compactor(backend).compact(conversation, [])
    assert result.problem == problem
    assert not result.changed and result.history == conversation.messages
    assert result.usage == Usage(9000, 900)  # the request still cost tokens


def test_a_history_of_system_messages_alone_cannot_be_compacted() -> None:
    backend = ScriptedBackend([], context_window=1000)
    conversation = Conversation([system("s" * 10_000)])
    result = Compactor(backend).compact(conversation, [])
    assert result.problem is not None and not result.changed
    assert backend.requests == []


@pytest.mark.parametrize("kwargs", [{"threshold": 0.05}, {"threshold": 1.5}, {"keep_recent_share": 0.9},
                                    {"summary_max_tokens": 0}, {"keep_recent_outputs": -1}])
def test_bad_compaction_settings_are_refused(kwargs: dict[str, float]) -> None:
    with pytest.raises(CompactionSettingsError):
        CompactionSettings(**kwargs)  # type: ignore[arg-type]


def test_the_loop_compacts_before_a_completion_and_the_rules_survive(tmp_path: Path) -> None:
    root = tmp_path / "repo"
    root.mkdir()
    (root / "AGENTS.md").write_text("Always run ruff before submitting.\n")
    toolset = make_toolset(root)
    rules = project_rules(root)
    prompt = system_prompt(root, toolset, rules)
    history = [system(prompt), user("TASK")]
    for index in range(6):
        history += exchange(index, 10, text="reasoning " * 600)
    backend = ScriptedBackend([[TextDelta("SUMMARY")], answer("done")], context_window=12_000)
    events: list[Event] = []
    agent = Agent(backend, toolset, events.append, conversation=Conversation(history),
                  compactor=Compactor(backend, rules=rules))

    assert agent.run_turn(user("go on")) == "answered"

    sent = backend.requests[1].messages
    assert sent[0].content == prompt  # the system prompt is never compacted away
    assert "Always run ruff before submitting." in sent[0].content
    assert "Always run ruff before submitting." in sent[1].content
    assert sent[2:4] == (history[-2], history[-1]) and sent[4] == user("go on")
    compacted = next(e for e in events if isinstance(e, Compacted))
    assert compacted.summary == "SUMMARY" and compacted.history == sent
    assert Notice("Compacting the conversation to fit the context window.") in events


def test_a_failed_compaction_is_reported_once_and_the_turn_goes_on(tmp_path: Path) -> None:
    root = tmp_path / "repo"
    root.mkdir()
    history = [system("s"), user("task " * 4000)]  # nothing to elide, one huge message
    backend = ScriptedBackend([[BackendError("HTTP 500")], calls(shell("echo 1")), calls(shell("echo 2")),
                               answer("done")], context_window=5000)
    events: list[Event] = []
    agent = Agent(backend, make_toolset(root), events.append, conversation=Conversation(history),
                  compactor=Compactor(backend))

    assert agent.run_turn(user("go")) == "answered"

    errors = [e.message for e in events if isinstance(e, AgentError)]
    assert errors == ["Could not compact the conversation: the summary request failed: HTTP 500."]
    assert len(backend.requests) == 4  # one summary request, three completions: the summary was not retried
    assert not any(isinstance(e, Compacted) for e in events)


def test_a_summary_requests_usage_counts_towards_the_budget(tmp_path: Path) -> None:
    root = tmp_path / "repo"
    root.mkdir()
    backend = ScriptedBackend([[TextDelta("S"), Usage(4000, 40)], answer("ok", Usage(100, 10))],
                              context_window=10_000)
    events: list[Event] = []
    history = long_history(10, 10, text="thinking " * 1000)
    agent = Agent(backend, make_toolset(root), events.append, conversation=Conversation(history),
                  compactor=Compactor(backend))
    agent.run_turn(user("go"))
    assert [e.total_tokens for e in events if isinstance(e, UsageReport)] == [4040, 4150]
