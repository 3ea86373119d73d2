"""`kcode chat`: the interactive agent. One prompt, one turn of the agent, and round again until Ctrl-D.

Every message is appended to a session file as it happens, so `--resume` can continue any session, even
one that crashed. Ctrl-C cancels the running turn (and kills its command) and returns to the prompt.
With a message piped to stdin instead, it answers that one message and leaves (see `piped_input`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from rich.console import Console
from rich.markup import escape

from kcode.agent.approvals import ApprovalMode, Approvals, Approver
from kcode.agent.conversation import Conversation
from kcode.agent.events import Event
from kcode.agent.loop import Agent
from kcode.backends.factory import backend_notice, make_backend
from kcode.checkpoints.steps import history_before
from kcode.checkpoints.store import CheckpointError
from kcode.commands.agent_setup import (
    budget,
    checkpoints,
    compactor,
    guarded,
    mcp_servers,
    new_conversation,
    sandbox,
)
from kcode.commands.checkpoints import print_checkpoints, restore_report
from kcode.commands.piped_input import NobodyToAsk
from kcode.config import Settings
from kcode.errors import KcodeError
from kcode.mcp.status import status_lines
from kcode.messages import user
from kcode.sessions import LoadedSession, SessionRecorder, SessionStore
from kcode.ui.approval_prompt import TerminalApprover
from kcode.ui.render import ChatRenderer
from kcode.ui.repl_input import ReplInput
from tools.standard import standard_toolset
from tools.toolset import Toolset

if TYPE_CHECKING:
    from kcode.mcp.connection import McpServers

HELP = """\
/help            this list
/model [NAME]    show the model, or switch to NAME for the rest of the session
/clear           start a new conversation (a new session)
/compact         compact the conversation now
/cost            tokens and cost so far
/undo            put back the files the last step changed (again: redo)
/rewind N        files and conversation back to before the Nth-last step
/checkpoints     this session's checkpoints
/mcp [restart S] the MCP servers and their tools; restart server S
/exit            leave (Ctrl-D does too)

Enter sends; Esc-Enter (or a trailing \\) starts a new line; @path completes file names.
Ctrl-C stops the agent's turn; at the prompt it keeps the text, twice clears it.
Ctrl-D at an empty prompt leaves."""


@dataclass(frozen=True)
class ChatOptions:
    root: Path
    approval_mode: ApprovalMode
    resume: str | None = None
    """A session id (or a unique prefix); "last" picks this workspace's newest session."""
    piped_message: str | None = None
    """The message piped to stdin: answer it, then leave, asking nobody (see `piped_input`)."""


class ChatSession:
    """One REPL: the agent, its session file and the screen, wired together."""

    def __init__(self, settings: Settings, options: ChatOptions, console: Console, toolset: Toolset,
                 reload: Callable[[str], Settings], repl: ReplInput | None = None,
                 mcp: McpServers | None = None) -> None:
        self.settings, self.options, self.console, self.toolset = settings, options, console, toolset
        self.mcp = mcp
        self.reload = reload
        self.renderer = ChatRenderer(console)
        self.store = SessionStore(settings.data_dir / "sessions")
        self._repl = repl
        approver: Approver = TerminalApprover(console, suspend=self.renderer.suspended) \
            if options.piped_message is None else NobodyToAsk()
        backend = make_backend(settings)
        self.recorder: SessionRecorder | None = None
        self.agent = Agent(backend, toolset, self._emit, conversation=new_conversation(options.root, toolset),
                           budget=budget(settings),
                           approvals=guarded(Approvals(options.approval_mode, approver), settings, options.root,
                                             toolset, home=Path.home(), on_decision=self._emit),
                           compactor=compactor(settings, backend, options.root))
        self.recorder = self._open_session(options.resume)
        self.checkpoints = self.agent.checkpoints = checkpoints(settings, options.root, self.recorder.id)

    def run(self) -> None:
        """Read and answer messages until the user leaves; a piped message alone, and no banner to read it."""
        session_id = self.recorder.id if self.recorder else ""
        if self.options.piped_message is None:
            self.console.print(f"[bold]kcode[/] · {escape(self.settings.profile.model)} · "
                               f"{escape(str(self.options.root))} · session {session_id}\n"
                               "[dim]/help for commands, Ctrl-D to leave[/]")
        notice = backend_notice(self.settings)
        if notice is not None:
            self.console.print(f"[yellow]{escape(notice)}[/]")
        if self.options.piped_message is not None:
            self._turn(self.options.piped_message.strip())
            return
        while True:
            try:
                text = self.repl.read().strip()
            except KeyboardInterrupt:
                self.console.print("[dim](Ctrl-D or /exit leaves)[/]")
                continue
            except EOFError:
                return
            if not text:
                continue
            if text.startswith("/"):
                try:
                    if self._slash(text) == "exit":
                        return
                except KeyboardInterrupt:  # a slow /compact, say: back to the prompt, never out of kcode
                    self.console.print("[yellow]interrupted[/]")
                continue
            self._turn(text)

    @property
    def repl(self) -> ReplInput:
        """The prompt, made on first use: a chat answering a piped message has none (nor its tty warning)."""
        if self._repl is None:
            self._repl = ReplInput(self.settings.data_dir / "prompt-history", root=self.options.root,
                                   toolbar=self._toolbar)
        return self._repl

    def _turn(self, text: str) -> None:
        self.renderer.start_turn()
        try:
            self.agent.run_turn(user(text))
        except KeyboardInterrupt:  # Ctrl-C between the loop's own checks
            self.renderer.close()
            self.console.print("[yellow]interrupted[/]")

    def _slash(self, text: str) -> str | None:
        command, _, argument = text.partition(" ")
        argument = argument.strip()
        if command in ("/exit", "/quit"):
            return "exit"
        if command == "/help":
            self.console.print(escape(HELP))
        elif command == "/model":
            self._switch_model(argument)
        elif command == "/clear":
            self.agent.conversation = new_conversation(self.options.root, self.toolset)
            self.recorder = self._new_session()
            self.checkpoints.start_session(self.recorder.id)
            self.console.print(f"[dim]New conversation (session {self.recorder.id}).[/]")
        elif command == "/compact":
            self._compact()
        elif command == "/cost":
            self.console.print(self._cost_line())
        elif command in ("/undo", "/rewind", "/checkpoints"):
            self._checkpoint_command(command, argument)
        elif command == "/mcp":
            self._mcp_command(argument)
        else:
            self.console.print(f"[red]Unknown command {escape(command)}.[/] /help lists the commands.")
        return None

    def _checkpoint_command(self, command: str, argument: str) -> None:
        try:
            if command == "/checkpoints":
                print_checkpoints(self.checkpoints.store, self.console, session=self.checkpoints.session_id)
            elif command == "/undo":
                self.console.print(restore_report(self.checkpoints.undo()))
                self.console.print("[dim]/undo again puts them back.[/]")
            else:
                self._rewind(argument)
        except CheckpointError as exc:
            self.console.print(f"[red]{escape(str(exc))}[/]")

    def _mcp_command(self, argument: str) -> None:
        """`/mcp` lists the session's servers and tools; `/mcp restart NAME` starts a stopped server again."""
        verb, _, name = argument.partition(" ")
        if self.mcp is None:
            self.console.print("[dim]No MCP servers in this session (none is configured, or --no-mcp).[/]")
            return
        if verb not in ("", "restart") or (verb == "restart") != bool(name.strip()):
            self.console.print("[red]/mcp lists the MCP servers; /mcp restart NAME restarts one.[/]")
            return
        statuses = self.mcp.statuses()
        if verb == "restart":
            restarted = self.mcp.restart(name.strip())
            if restarted is None:
                self.console.print(f"[red]No enabled MCP server is named {escape(name.strip())}.[/]")
                return
            statuses = [restarted]
        for line in status_lines(statuses):
            self.console.print(escape(line))

    def _rewind(self, argument: str) -> None:
        if not argument.isdigit() or int(argument) < 1:
            self.console.print("[red]/rewind takes how many steps to go back, e.g. /rewind 2.[/]")
            return
        target = self.checkpoints.step_back(int(argument))
        history = history_before(self.agent.conversation.messages, target)
        if history is None:
            self.console.print(f"[red]Step {target.step} is no longer in the conversation (it was compacted); "
                               "/undo can still put files back.[/]")
            return
        self.console.print(restore_report(self.checkpoints.rewind(target)))
        self.agent.conversation.replace(history)
        if self.recorder is not None:
            self.recorder.rewound(history)
        self.console.print(f"[dim]The conversation is back to before step {target.step}; "
                           "/undo puts the files back (not the conversation).[/]")

    def _switch_model(self, name: str) -> None:
        if not name:
            self.console.print(f"Model: {escape(self.settings.profile.model)} ({self.settings.profile.name})")
            return
        try:
            settings = self.reload(name)
            backend = make_backend(settings)
        except KcodeError as exc:
            self.console.print(f"[red]{escape(str(exc))}[/]")
            return
        self.settings = settings
        self.agent.backend = backend
        self.agent.budget.set_pricing(budget(settings).pricing)
        self.agent.compactor = compactor(settings, backend, self.options.root)
        self.console.print(f"Model: {escape(settings.profile.model)}")

    def _compact(self) -> None:
        """The outcome is reported by the agent's own events (a `Compacted` line, or the problem), once."""
        self.agent.compact(force=True)

    def _cost_line(self) -> str:
        spent = self.agent.budget
        cost = f"${spent.cost_usd:.4f}" if spent.cost_usd is not None else "cost unknown (no prices for this model)"
        return f"{spent.total_tokens:,} tokens · {cost}"

    def _toolbar(self) -> str:
        spent = self.agent.budget
        cost = f" · ${spent.cost_usd:.4f}" if spent.cost_usd is not None else ""
        return f" {self.settings.profile.model} · {spent.total_tokens:,} tokens{cost}"

    def _open_session(self, resume: str | None) -> SessionRecorder:
        if resume is None:
            return self._new_session()
        session_id = resume
        if resume == "last":
            sessions = [info for info in self.store.list(self.options.root) if info.first_user_message]
            if not sessions:
                raise KcodeError(f"no session to resume in {self.options.root}; `kcode sessions` lists them")
            session_id = sessions[0].id
        loaded = self.store.load(session_id)
        if loaded.info.workspace != str(self.options.root):
            raise KcodeError(f"session {loaded.info.id} was in {loaded.info.workspace}, not here; resume it there: "
                             f"kcode chat {loaded.info.workspace} --resume {loaded.info.id}")
        self.agent.conversation = Conversation(loaded.messages)
        self._carry_usage(loaded)
        self.console.print(f"[dim]Resumed session {loaded.info.id}: {loaded.info.message_count} messages.[/]")
        return self.store.recorder(loaded.info.id)

    def _carry_usage(self, loaded: LoadedSession) -> None:
        """Count on from the resumed session's tokens and cost, so the toolbar and /cost cover all of it."""
        spent = self.agent.budget
        spent.total_tokens = loaded.total_tokens
        if spent.cost_usd is not None and loaded.cost_usd is not None:
            spent.cost_usd = loaded.cost_usd
        self.renderer.set_session_cost(spent.cost_usd)

    def _new_session(self) -> SessionRecorder:
        recorder = self.store.create(self.options.root, self.settings.profile.model)
        for message in self.agent.conversation.messages:
            recorder.add(message)
        return recorder

    def _emit(self, event: Event) -> None:
        self.renderer(event)
        if self.recorder is not None:
            self.recorder(event)


def run_chat(settings: Settings, options: ChatOptions, reload: Callable[[str], Settings],
             console: Console | None = None) -> None:
    console = console or Console(highlight=False)  # no guessing colours into paths and numbers
    shell_box = sandbox(settings, options.root, Path.home())
    if shell_box.notice is not None:
        console.print(f"[yellow]{escape(shell_box.notice)}[/]")
    with mcp_servers(settings, options.root, lambda line: console.print(f"[yellow]{escape(line)}[/]")) as servers, \
            standard_toolset(options.root, settings.tool_settings(), hidden_env=settings.secret_variables(),
                             sandbox=shell_box, extra_tools=servers.tools() if servers is not None else ()) as toolset:
        ChatSession(settings, options, console, toolset, reload, mcp=servers).run()
