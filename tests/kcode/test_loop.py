"""The turn loop, driven by a scripted backend and real tools on real files."""

from __future__ import annotations

import re
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

from kcode.agent.approvals import COMMANDS_REFUSED, ApprovalRequest, Approvals, Decision, headless_approvals
from kcode.agent.conversation import Conversation
from kcode.agent.events import (
    AgentError,
    AssistantDelta,
    CompletionRetrying,
    Event,
    MessageAdded,
    Notice,
    ToolCallFinished,
    ToolCallStarted,
    TurnEnded,
    UsageReport,
)
from kcode.agent.limits import Budget, Limits, Pricing
from kcode.agent.loop import Agent, LoopSettings, LoopSettingsError
from kcode.backends.base import Finish, ReasoningDelta, Retrying, TextDelta, ToolCallReady, Usage
from kcode.errors import BackendError
from kcode.messages import Message, ToolCall, system, user
from tests.kcode.scripted import (
    USAGE,
    CtrlCTool,
    FakeClock,
    ScriptedBackend,
    answer,
    assert_consistent,
    calls,
    create,
    make_toolset,
    shell,
)
from tools.bash import BashTool
from tools.clamp import OutputClamp
from tools.settings import ToolSettings
from tools.toolset import Toolset
from tools.workspace import Workspace


@pytest.fixture
def root(tmp_path: Path) -> Path:
    workspace = tmp_path / "work"
    workspace.mkdir()
    return workspace


def make_agent(root: Path, script: list, *extra_tools: object, **kwargs: object) -> tuple[Agent, ScriptedBackend,
                                                                                           list[Event]]:
    backend = ScriptedBackend(script)
    events: list[Event] = []
    conversation = Conversation([system("You are a test agent.")])
    agent = Agent(backend, make_toolset(root, *extra_tools), events.append, conversation=conversation,
                  **kwargs)  # type: ignore[arg-type]
    return agent, backend, events


def tool_results(messages: tuple[Message, ...]) -> list[str]:
    return [m.content for m in messages if m.role == "tool"]


def test_an_answer_without_tool_calls_ends_the_turn_as_answered(root: Path) -> None:
    agent, backend, events = make_agent(root, [answer("Hello there.")])

    assert agent.run_turn(user("hi")) == "answered"

    assert [type(e) for e in events] == [MessageAdded, AssistantDelta, MessageAdded, UsageReport, TurnEnded]
    assert events[-1] == TurnEnded("answered")
    assert [m.role for m in agent.conversation.messages] == ["system", "user", "assistant"]
    assert agent.conversation.messages[-1].content == "Hello there."
    assert backend.requests[0].tool_names == ("editor", "bash", "submit")
    assert backend.requests[0].messages[-1] == user("hi")


def test_a_tool_result_joins_the_history_and_the_next_completion_sees_it(root: Path) -> None:
    agent, backend, events = make_agent(root, [calls(create("notes.txt", "one\n")), answer("Done.")])

    assert agent.run_turn(user("write notes")) == "answered"

    assert (root / "notes.txt").read_text() == "one\n"
    second = backend.requests[1].messages
    assert second[-2].role == "assistant" and second[-2].tool_calls[0].name == "editor"
    assert second[-1].role == "tool"
    assert second[-1].tool_call_id == second[-2].tool_calls[0].id
    assert second[-1].name == "editor"
    finished = [e for e in events if isinstance(e, ToolCallFinished)]
    assert len(finished) == 1 and not finished[0].result.is_error
    assert finished[0].result.output == second[-1].content
    started = [e for e in events if isinstance(e, ToolCallStarted)]
    assert started[0].call == second[-2].tool_calls[0]


def test_submit_ends_the_turn_and_later_calls_in_the_same_message_do_not_run(root: Path) -> None:
    agent, _, _ = make_agent(root, [calls(("submit", {"summary": "fixed"}), create("late.txt", "x"))])

    assert agent.run_turn(user("fix it")) == "submitted"

    assert not (root / "late.txt").exists()
    results = tool_results(agent.conversation.messages)
    assert results[0] == "Submitted. Summary: fixed"
    assert results[1].startswith("Not run: the turn ended (submitted)")
    assert_consistent(agent.conversation.messages)


def test_malformed_arguments_and_unknown_tools_get_error_results_and_the_loop_goes_on(root: Path) -> None:
    script = [calls(("editor", '{"command": "create", "path": '), ("grep_everything", {"q": 1}),
                    ("editor", {"command": "create", "file_text": "no path"})),
              calls(create("ok.txt", "fine")), answer("Recovered.")]
    agent, backend, _ = make_agent(root, script)

    assert agent.run_turn(user("go")) == "answered"

    bad_json, unknown, missing = tool_results(backend.requests[1].messages)
    assert "invalid JSON" in bad_json
    assert "There is no tool named 'grep_everything'" in unknown
    assert "missing required argument 'path'" in missing
    assert (root / "ok.txt").read_text() == "fine"


def test_the_third_identical_call_is_nudged_and_the_fifth_ends_the_turn(root: Path) -> None:
    same = shell("echo run >> log.txt; echo ok")
    script = [calls(same), calls(same), calls(same, same), calls(same, create("after.txt", "x"))]
    agent, _, events = make_agent(root, script)

    assert agent.run_turn(user("loop")) == "repeated_call"

    assert (root / "log.txt").read_text().count("run") == 4  # the fifth never ran
    results = tool_results(agent.conversation.messages)
    assert "made this exact call" not in results[0] + results[1]
    assert "You have made this exact call 3 times in a row" in results[2]
    assert "You have made this exact call 4 times in a row" in results[3]
    assert results[4] == "Not run: this exact call was made 5 times in a row."
    assert results[5].startswith("Not run: the turn ended (repeated_call)")
    assert not (root / "after.txt").exists()
    assert any(isinstance(e, AgentError) and "5 times" in e.message for e in events)
    assert_consistent(agent.conversation.messages)


def test_a_different_call_in_between_resets_the_repeat_count(root: Path) -> None:
    a, b = shell("echo a"), shell("echo b")
    script = [calls(a), calls(a), calls(b), calls(a), calls(a), answer("done")]
    agent, _, _ = make_agent(root, script)

    assert agent.run_turn(user("go")) == "answered"
    assert not any("exact call" in r for r in tool_results(agent.conversation.messages))


def test_repeat_thresholds_are_settings(root: Path) -> None:
    same = shell("echo x")
    agent, _, _ = make_agent(root, [calls(same), calls(same)],
                             settings=LoopSettings(nudge_repeats=2, stop_repeats=2))
    assert agent.run_turn(user("go")) == "repeated_call"
    with pytest.raises(LoopSettingsError, match="nudge_repeats"):
        LoopSettings(nudge_repeats=4, stop_repeats=3)


def test_arguments_that_differ_only_in_key_order_count_as_the_same_call(root: Path) -> None:
    first = ("bash", '{"command": "echo a"}')
    spaced = ("bash", '{ "command" :  "echo a" }')
    agent, _, _ = make_agent(root, [calls(first), calls(spaced), calls(first), answer("ok")])
    agent.run_turn(user("go"))
    assert "3 times in a row" in tool_results(agent.conversation.messages)[2]


def test_the_step_limit_stops_a_turn_and_restarts_with_the_next(root: Path) -> None:
    script = [calls(shell(f"echo {n}")) for n in range(4)]
    agent, backend, events = make_agent(root, script, budget=Budget(Limits(max_steps=2)))

    assert agent.run_turn(user("go")) == "step_limit"
    assert len(backend.requests) == 2
    assert any(isinstance(e, AgentError) and "2 steps" in e.message for e in events)
    assert_consistent(agent.conversation.messages)
    assert agent.run_turn(user("again")) == "step_limit"  # steps count per turn: two more completions
    assert len(backend.requests) == 4


def test_the_token_limit_counts_every_completion_of_the_session(root: Path) -> None:
    script = [calls(shell("echo 1"), usage=Usage(500, 100)), calls(shell("echo 2"), usage=Usage(500, 100)),
              answer("unreached")]
    agent, _, events = make_agent(root, script, budget=Budget(Limits(max_tokens=1000)))

    assert agent.run_turn(user("go")) == "token_limit"
    reports = [e for e in events if isinstance(e, UsageReport)]
    assert [r.total_tokens for r in reports] == [600, 1200]


def test_the_cost_limit_uses_the_profiles_prices(root: Path) -> None:
    pricing = Pricing(input_per_mtok_usd=1.0, output_per_mtok_usd=4.0, cached_input_per_mtok_usd=0.1)
    usage = Usage(prompt_tokens=100_000, completion_tokens=10_000, cached_tokens=50_000)
    script = [calls(shell("echo 1"), usage=usage), calls(shell("echo 2"), usage=usage), answer("unreached")]
    agent, _, events = make_agent(root, script, budget=Budget(Limits(max_cost_usd=0.15), pricing))

    assert agent.run_turn(user("go")) == "cost_limit"
    costs = [e.cost_usd for e in events if isinstance(e, UsageReport)]
    assert costs == pytest.approx([0.095, 0.19])  # 50k at $1 + 50k cached at $0.1 + 10k at $4


def test_without_prices_there_is_no_cost_and_no_cost_limit(root: Path) -> None:
    agent, _, events = make_agent(root, [answer("hi", usage=Usage(10**6, 10**6))],
                                  budget=Budget(Limits(max_cost_usd=0.01)))
    assert agent.run_turn(user("go")) == "answered"
    assert [e.cost_usd for e in events if isinstance(e, UsageReport)] == [None]


def test_the_time_limit_uses_the_injected_clock(root: Path) -> None:
    clock = FakeClock()
    script = [[lambda: clock.advance(30), *calls(shell("echo 1"))],
              [lambda: clock.advance(31), *calls(shell("echo 2"))], answer("unreached")]
    agent, backend, _ = make_agent(root, script, budget=Budget(Limits(max_wall_s=60), clock=clock))

    assert agent.run_turn(user("go")) == "time_limit"
    assert len(backend.requests) == 2


def test_missing_usage_is_estimated_so_limits_still_hold(root: Path) -> None:
    agent, _, events = make_agent(root, [answer("x" * 350, usage=None)])
    agent.run_turn(user("go"))
    report = next(e for e in events if isinstance(e, UsageReport))
    assert report.prompt_tokens > 0
    assert report.completion_tokens == 100 + 4  # 350 chars / 3.5 plus the message overhead


def test_a_retry_mid_stream_discards_the_partial_attempt(root: Path) -> None:
    retry = Retrying(attempt=1, max_attempts=3, delay_s=0.5, reason="HTTP 502")
    half_call = ToolCallReady(ToolCall(id="call_void", name="bash", arguments='{"command": "touch void"}'))
    script = [[TextDelta("Let me "), ReasoningDelta("thinking"), half_call, retry, TextDelta("All "),
               TextDelta("good."), Usage(100, 5), Finish("stop")]]
    agent, _, events = make_agent(root, script)

    assert agent.run_turn(user("go")) == "answered"

    final = agent.conversation.messages[-1]
    assert final.content == "All good." and final.tool_calls == ()
    assert not (root / "void").exists()
    assert CompletionRetrying(1, 3, 0.5, "HTTP 502") in events
    assert AssistantDelta("thinking", reasoning=True) in events
    assert "thinking" not in final.content  # reasoning is shown, never sent back


def test_a_backend_error_ends_the_turn_with_an_error_and_the_next_turn_works(root: Path) -> None:
    script = [[TextDelta("partial"), BackendError("the API said 401: invalid key")], answer("back")]
    agent, backend, events = make_agent(root, script)

    assert agent.run_turn(user("go")) == "error"
    assert AgentError("the API said 401: invalid key") in events
    assert events[-1] == TurnEnded("error")
    assert [m.role for m in agent.conversation.messages] == ["system", "user"]

    assert agent.run_turn(user("again")) == "answered"
    assert [m.role for m in backend.requests[1].messages] == ["system", "user", "user"]


def test_ctrl_c_inside_a_tool_ends_the_turn_with_a_consistent_history(root: Path) -> None:
    script = [calls(("wait", {}), create("never.txt", "x")), answer("resumed")]
    agent, backend, events = make_agent(root, script, CtrlCTool())

    assert agent.run_turn(user("go")) == "interrupted"

    assert events[-1] == TurnEnded("interrupted")
    assert not (root / "never.txt").exists()
    stopped, never_run = tool_results(agent.conversation.messages)
    assert stopped.startswith("Interrupted by the user after 0.0 s of running")  # it ran: not "Not run"
    assert never_run == "Not run: interrupted by the user."
    finished = [e.call.name for e in events if isinstance(e, ToolCallFinished)]
    assert finished == ["wait", "editor"]
    assert agent.run_turn(user("carry on")) == "answered"
    assert_consistent(backend.requests[1].messages)


def test_ctrl_c_during_a_real_bash_command_stops_it_and_the_next_turn_goes_on(root: Path) -> None:
    settings = ToolSettings()
    clamp = OutputClamp(settings, root.parent / "spill")

    def ctrl_c(*_: Any) -> None:
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGALRM, ctrl_c)
    try:
        with BashTool(Workspace(root), settings, clamp) as bash:
            backend = ScriptedBackend([calls(shell("sleep 41.5")), answer("ok")])
            agent = Agent(backend, Toolset([bash], clamp), lambda event: None)
            started = time.monotonic()
            signal.setitimer(signal.ITIMER_REAL, 0.5)
            assert agent.run_turn(user("go")) == "interrupted"
            assert time.monotonic() - started < 10
            ran_for = re.match(r"Interrupted by the user after (\d+\.\d) s of running",
                               tool_results(agent.conversation.messages)[0])
            assert ran_for is not None and 0.4 <= float(ran_for[1]) < 10
            running = subprocess.run(["pgrep", "-f", "sleep 41.5"], capture_output=True, text=True).stdout
            assert running == ""
            assert agent.run_turn(user("again")) == "answered"
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
    assert_consistent(backend.requests[1].messages)


def test_ctrl_c_while_streaming_closes_the_stream_and_adds_no_half_answer(root: Path) -> None:
    backend = ScriptedBackend([[TextDelta("Hel"), TextDelta("lo"), Finish("stop")]])
    events: list[Event] = []

    def sink(event: Event) -> None:  # the user presses Ctrl-C while the first delta is on screen
        events.append(event)
        if isinstance(event, AssistantDelta):
            raise KeyboardInterrupt

    agent = Agent(backend, make_toolset(root), sink)
    assert agent.run_turn(user("go")) == "interrupted"
    assert backend.closed == 1
    assert [m.role for m in agent.conversation.messages] == ["user"]


def test_a_resumed_history_with_unanswered_calls_is_repaired_before_the_next_turn(root: Path) -> None:
    crashed = [system("s"), user("go"), Message("assistant", tool_calls=(ToolCall("call_x", "bash", "{}"),))]
    backend = ScriptedBackend([answer("ok")])
    agent = Agent(backend, make_toolset(root), lambda e: None, conversation=Conversation(crashed))

    agent.run_turn(user("continue"))

    sent = backend.requests[0].messages
    assert_consistent(sent)
    assert sent[3].content == "Not run: the session ended before this call ran."


def test_ask_mode_asks_and_the_feedback_of_a_refusal_is_what_the_model_reads(root: Path) -> None:
    asked: list[ApprovalRequest] = []

    class Scripted:
        def decide(self, request: ApprovalRequest) -> Decision:
            asked.append(request)
            return Decision.no("use pathlib instead") if request.kind == "command" else Decision.yes()

    script = [calls(create("a.txt", "a"), shell("touch b.txt"), ("editor", {"command": "view", "path": "a.txt"}),
                    ("no_such_tool", {})),
              answer("ok")]
    agent, backend, events = make_agent(root, script, approvals=Approvals("ask", Scripted()))

    agent.run_turn(user("go"))

    assert [r.kind for r in asked] == ["edit", "command"]  # neither the view nor the unknown tool asked
    assert (root / "a.txt").exists() and not (root / "b.txt").exists()
    refused = tool_results(backend.requests[1].messages)[1]
    assert "use pathlib instead" in refused
    assert next(e for e in events if isinstance(e, ToolCallFinished) and e.call.name == "bash").result.is_error


def test_fix_without_yes_refuses_commands_without_asking_and_lets_edits_through(root: Path) -> None:
    script = [calls(shell("touch ran.txt"), create("fixed.py", "x = 1\n")), calls(("submit", {}))]
    agent, backend, _ = make_agent(root, script, approvals=headless_approvals(allow_commands=False))

    assert agent.run_turn(user("fix")) == "submitted"

    assert not (root / "ran.txt").exists()
    assert (root / "fixed.py").read_text() == "x = 1\n"
    assert tool_results(backend.requests[1].messages)[0] == COMMANDS_REFUSED


def test_the_loop_passes_max_completion_tokens_to_the_backend(root: Path) -> None:
    agent, backend, _ = make_agent(root, [answer("ok")], settings=LoopSettings(max_completion_tokens=321))
    agent.run_turn(user("go"))
    assert backend.requests[0].max_tokens == 321


def test_pricing_set_midway_starts_counting_and_an_unpriced_model_makes_cost_unknown() -> None:
    budget = Budget(Limits(max_cost_usd=1.0))
    budget.record_usage(Usage(1_000_000, 0))
    assert budget.cost_usd is None and budget.exceeded() is None
    budget.set_pricing(Pricing(input_per_mtok_usd=2.0, output_per_mtok_usd=8.0))
    budget.record_usage(Usage(1_000_000, 0))
    assert budget.cost_usd == pytest.approx(2.0)
    assert budget.exceeded() is not None and budget.exceeded()[0] == "cost_limit"
    budget.set_pricing(None)
    assert budget.cost_usd is None


def test_calls_cut_off_by_the_token_limit_are_not_run_and_the_model_is_told(root: Path) -> None:
    cut = [*calls(create("big.py", "x = 1\n"))[:-1], Finish("length")]
    agent, backend, events = make_agent(root, [cut, answer("I will write it in parts.")])

    assert agent.run_turn(user("write a big file")) == "answered"

    assert not (root / "big.py").exists()
    told = backend.requests[1].messages[-1]
    assert told.role == "tool" and "cut off" in told.content
    assert any(isinstance(e, Notice) and "token limit" in e.message for e in events)


def test_an_answer_cut_off_by_the_token_limit_is_reported(root: Path) -> None:
    agent, _, events = make_agent(root, [[TextDelta("The long answer sto"), USAGE, Finish("length")]])
    assert agent.run_turn(user("explain")) == "answered"
    assert any(isinstance(e, Notice) and "cut off" in e.message for e in events)
