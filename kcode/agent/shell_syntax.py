"""Shell commands as bash will run them, parsed with tree-sitter-bash rather than split by hand.

Both the approvals and the destructive-command guard must know which programs a command line runs and
with which words, and whether anything in it cannot be known before it runs. `parse_command` gives:

- every simple command, seen through `&&`, `||`, `;`, pipes, `&`, newlines, subshells, braces, if/for/
  while/case bodies, `!`, function bodies and command substitutions, and *through wrappers* (`sudo`,
  `env`, `xargs`, `find -exec`, `timeout`, `bash -c STR` parsed again…, see `shell_wrappers`), each with
  its words after quote removal (`r''m` is `rm`, `'~'` is a literal `~`) and the expansions left in them;
- hazards: what makes the text not statically knowable or able to do more than its words say
  (substitutions, variables, here-documents, array subscripts, `/dev/tcp`, file writes, extra file
  descriptors, function definitions, eval-like builtins, control characters, parse errors).

tree-sitter is imported on first use, so `kcode --help` never loads it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from functools import cache
from typing import TYPE_CHECKING, Literal

from kcode.agent.shell_quoting import ansi_c, double_quoted, unquoted
from kcode.agent.shell_wrappers import Wrapped, unwrap

if TYPE_CHECKING:
    from tree_sitter import Node, Parser

Expansion = Literal["tilde", "glob", "brace", "parameter", "command", "process", "arithmetic", "unknown"]
Hazard = Literal[
    "unparsed", "control_character", "line_continuation", "command_substitution", "process_substitution",
    "parameter_expansion", "arithmetic_expansion", "brace_expansion", "glob", "here_string", "here_document",
    "array_subscript", "network_redirect", "file_write", "descriptor", "function_definition", "eval",
    "too_deep",
]
_EXPANSION_HAZARDS: dict[Expansion, Hazard] = {
    "command": "command_substitution", "process": "process_substitution", "parameter": "parameter_expansion",
    "arithmetic": "arithmetic_expansion", "brace": "brace_expansion", "unknown": "unparsed",
}
# Builtins that run text as code, or change what later commands in the persistent shell mean.
EVAL_BUILTINS = frozenset({
    "eval", "source", ".", "trap", "alias", "let", "fc", "enable", "builtin", "bind", "coproc", "declare",
    "typeset", "local", "export", "readonly", "mapfile", "readarray", "read", "hash", "set", "shopt", "unset",
})
WRITE_OPERATORS = frozenset({">", ">>", ">|", "&>", "&>>", "<>", ">&", "&>|"})
HARMLESS_TARGETS = frozenset({"/dev/null", "/dev/stdout", "/dev/stderr", "/dev/tty"})
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")
_WORD_SPLITTING_CONTINUATION = re.compile(r"(?<![ \t\n;&|(])\\\n")  # a `\`-newline joining two halves of a word
_SUBSCRIPT = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\[[^\]]*[A-Za-z_$`(][^\]]*\]")
_ASSIGNMENT_TILDE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*=~")
_BRACE = re.compile(r"\{[^{}\s]*(,|\.\.)[^{}\s]*\}")
_MAX_DEPTH = 8  # `bash -c "bash -c '…'"` nesting beyond this is refused as unknowable


@dataclass(frozen=True)
class Word:
    """One word after quote removal; parts bash would still expand stay as written and are named."""

    text: str
    expansions: frozenset[Expansion] = frozenset()

    @property
    def literal(self) -> bool:
        """Whether bash passes `text` exactly (nothing left to expand)."""
        return not self.expansions


@dataclass(frozen=True)
class Redirect:
    """`2>&1`, `> out.txt`, `<<< text`: the operator, the descriptor it names (None: the default), the target."""

    operator: str
    fd: int | None
    target: Word | None


@dataclass(frozen=True)
class SimpleCommand:
    """A program and its arguments, as one of the commands a line runs."""

    words: tuple[Word, ...]
    assignments: tuple[Word, ...] = ()
    redirects: tuple[Redirect, ...] = ()
    wrappers: tuple[str, ...] = ()
    """Programs that run this one, outermost first (`sudo`, `xargs`, `bash`)."""
    more_arguments: bool = False
    """The wrapper adds arguments only known at run time (`xargs`, find's `{}`)."""
    directory_changes: tuple[Word | None, ...] = ()
    """Where earlier `cd`s in the same line went, in order; None for one that cannot be known (`cd -`)."""
    inputs: frozenset[str] = frozenset()
    """Programs whose output this one reads: earlier stages of its pipeline and its substitutions."""

    @property
    def argv(self) -> tuple[str, ...]:
        return tuple(word.text for word in self.words)

    @property
    def program(self) -> str:
        """The program's name without its directory (`/bin/rm` is `rm`); empty for assignments alone."""
        return self.words[0].text.rsplit("/", 1)[-1] if self.words else ""


@dataclass(frozen=True)
class FunctionDefinition:
    """`name() { … }` and the programs its body calls (a body calling its own name twice is a fork bomb)."""

    name: str
    calls: frozenset[str]


@dataclass(frozen=True)
class ParsedCommand:
    """Everything a command line runs, and what in it cannot be known before it runs."""

    commands: tuple[SimpleCommand, ...]
    hazards: frozenset[Hazard]
    functions: tuple[FunctionDefinition, ...] = ()


def parse_command(text: str) -> ParsedCommand:
    """Parse `text` as bash would; a parse error is the hazard `unparsed`, never an exception."""
    walker = _Walker()
    if _CONTROL.search(text):
        walker.hazards.add("control_character")
    if _WORD_SPLITTING_CONTINUATION.search(text):
        walker.hazards.add("line_continuation")
    walker.script(text, (), frozenset(), 0)
    return ParsedCommand(tuple(walker.commands), frozenset(walker.hazards), tuple(walker.functions))


@cache
def _parser() -> Parser:
    import tree_sitter_bash
    from tree_sitter import Language, Parser

    return Parser(Language(tree_sitter_bash.language()))


@dataclass
class _Walker:
    """Walks parse trees, collecting commands and hazards; one per `parse_command` call."""

    commands: list[SimpleCommand] = field(default_factory=list)
    hazards: set[Hazard] = field(default_factory=set)
    functions: list[FunctionDefinition] = field(default_factory=list)
    directory_changes: list[Word | None] = field(default_factory=list)
    _source: bytes = b""
    _substituted: set[str] = field(default_factory=set)
    _depth: int = 0

    def script(self, text: str, wrappers: tuple[str, ...], inputs: frozenset[str], depth: int) -> None:
        if depth > _MAX_DEPTH:
            self.hazards.add("too_deep")
            return
        source = text.encode()
        tree = _parser().parse(source)
        if tree.root_node.has_error:
            self.hazards.add("unparsed")
        outer = self._source, self._depth
        self._source, self._depth = source, depth
        self._statement(tree.root_node, wrappers, inputs)
        self._source, self._depth = outer

    def _text(self, node: Node) -> str:
        return self._source[node.start_byte:node.end_byte].decode(errors="replace")

    def _statement(self, node: Node, wrappers: tuple[str, ...], inputs: frozenset[str]) -> None:
        kind = node.type
        if kind == "command":
            self._command(node, [], wrappers, inputs)
        elif kind == "redirected_statement":
            body = node.child_by_field_name("body")
            redirect_nodes = [child for child in node.children if child != body]
            if body is not None and body.type == "command":
                self._command(body, redirect_nodes, wrappers, inputs)
            else:  # `{ a; b; } > f`: the redirections are kept on a command of their own
                if body is not None:
                    self._statement(body, wrappers, inputs)
                self._substituted = set()
                redirects = tuple(r for child in redirect_nodes for r in self._redirects(child))
                self._add(SimpleCommand((), redirects=redirects, wrappers=wrappers,
                                        directory_changes=tuple(self.directory_changes),
                                        inputs=inputs | frozenset(self._substituted)))
        elif kind == "pipeline":
            fed = set(inputs)
            for stage in node.named_children:
                before = len(self.commands)
                self._statement(stage, wrappers, frozenset(fed))
                fed |= {c.program for c in self.commands[before:] if c.program}
        elif kind == "function_definition":
            self._function(node, wrappers, inputs)
        elif kind in ("declaration_command", "unset_command", "test_command"):
            self._builtin(node, wrappers, inputs)
        elif kind == "variable_assignment":
            self._add(SimpleCommand((), (self._assignment(node),), wrappers=wrappers, inputs=inputs))
        elif kind == "compound_statement" and node.child_count and node.children[0].type == "((":
            self.hazards.add("arithmetic_expansion")
            self._words_in(node)
        elif kind in ("comment", "heredoc_body"):
            self._words_in(node)
        elif kind in ("for_statement", "case_statement", "c_style_for_statement", "case_item"):
            for child in node.children:
                if child.type in ("word", "string", "raw_string", "concatenation", "simple_expansion", "expansion",
                                  "command_substitution", "number", "ansi_c_string", "arithmetic_expansion"):
                    self._check_word(self._word(child))
                elif child.is_named:
                    self._statement(child, wrappers, inputs)
        else:
            # program, list, subshell, compound_statement, if/while bodies, negated_command, ERROR…
            for child in node.named_children:
                self._statement(child, wrappers, inputs)

    # -- simple commands -------------------------------------------------------------------------------------
    def _command(self, node: Node, redirect_nodes: list[Node], wrappers: tuple[str, ...],
                 inputs: frozenset[str]) -> None:
        self._substituted = set()
        words: list[Word] = []
        assignments: list[Word] = []
        own_redirects: list[Redirect] = []
        previous_end = -1
        for child in node.children:
            if child.type == "variable_assignment":
                assignments.append(self._assignment(child))
            elif child.type.endswith("_redirect"):
                own_redirects.extend(self._redirects(child))
            elif child.type != "comment":
                word = self._word(child.named_children[0] if child.type == "command_name" and
                                  child.named_children else child)
                if child.start_byte == previous_end and words:  # bash sees one word where tree-sitter saw two
                    word = Word(words[-1].text + word.text, words[-1].expansions | word.expansions)
                    words.pop()
                words.append(word)
                previous_end = child.end_byte
        for redirect_node in redirect_nodes:
            own_redirects.extend(self._redirects(redirect_node))
        command = SimpleCommand(tuple(words), tuple(assignments), tuple(own_redirects), wrappers,
                                directory_changes=tuple(self.directory_changes),
                                inputs=inputs | frozenset(self._substituted))
        self._add(command)

    def _add(self, command: SimpleCommand) -> None:
        """Record `command`, what it does to the shell, and every command it runs through a wrapper."""
        for word in (*command.words, *command.assignments):
            self._check_word(word)
        for redirect in command.redirects:
            self._check_redirect(redirect)
        self.commands.append(command)
        program = command.program
        if program in EVAL_BUILTINS:
            self.hazards.add("eval")
        if program in ("cd", "pushd", "popd"):
            target = command.words[1] if len(command.words) > 1 else Word("~", frozenset({"tilde"}))
            self.directory_changes.append(None if program == "popd" or target.text == "-" else target)
        for wrapped in unwrap(command.argv):
            self._wrapped(command, wrapped)

    def _wrapped(self, outer: SimpleCommand, wrapped: Wrapped) -> None:
        wrappers = (*outer.wrappers, wrapped.wrapper)
        if wrapped.script is not None:
            script = outer.words[wrapped.script]
            if script.literal:
                self.script(script.text, wrappers, outer.inputs, self._depth + 1)
            return  # a script built at run time: its expansions are already hazards of this line
        assert wrapped.start is not None and wrapped.stop is not None
        words = outer.words[wrapped.start:wrapped.stop]
        if wrapped.joined_script:  # expansions stay as written, so parsing the joined text finds them again
            self.script(" ".join(word.text for word in words), wrappers, outer.inputs, self._depth + 1)
            return
        changes = outer.directory_changes
        if wrapped.directory is not None and wrapped.directory < len(outer.words):
            changes = (*changes, outer.words[wrapped.directory])
        if wrapped.wrapper == "find":
            starts = [outer.words[i] for i in wrapped.found_under] or [Word(".")]
            for start in starts:
                found = start if wrapped.finds_start else Word(start.text.rstrip("/") + "/…", start.expansions)
                replaced = tuple(found if word.text == "{}" else word for word in words)
                self._add(SimpleCommand(replaced, (), (), wrappers, False, changes, outer.inputs))
            return
        self._add(SimpleCommand(words, (), (), wrappers, wrapped.more_arguments, changes, outer.inputs))

    def _builtin(self, node: Node, wrappers: tuple[str, ...], inputs: frozenset[str]) -> None:
        """`export A=1`, `unset x`, `[[ -f x ]]`: the keyword, then every word inside."""
        self._substituted = set()
        keyword = node.children[0].type if node.children else ""
        words = [Word(keyword)] + [self._assignment(n) if n.type == "variable_assignment" else self._word(n)
                                   for n in _word_nodes(node)]
        self._add(SimpleCommand(tuple(words), wrappers=wrappers, inputs=inputs | frozenset(self._substituted)))

    def _function(self, node: Node, wrappers: tuple[str, ...], inputs: frozenset[str]) -> None:
        self.hazards.add("function_definition")
        name_node = node.child_by_field_name("name")
        body = node.child_by_field_name("body")
        before = len(self.commands)
        if body is not None:
            self._statement(body, wrappers, inputs)
        calls = frozenset(c.program for c in self.commands[before:] if c.program)
        self.functions.append(FunctionDefinition(self._text(name_node) if name_node else "", calls))

    def _words_in(self, node: Node) -> None:
        for child in _word_nodes(node):
            self._check_word(self._word(child))

    # -- words and redirections ------------------------------------------------------------------------------
    def _assignment(self, node: Node) -> Word:
        name = node.child_by_field_name("name")
        value = node.child_by_field_name("value")
        if name is not None and name.type == "subscript":
            self.hazards.add("array_subscript")
        value_word = self._word(value) if value is not None else Word("")
        if value is not None and value.type == "array":
            elements = [self._word(n) for n in _word_nodes(value)]
            value_word = Word(self._text(value), frozenset().union(*(e.expansions for e in elements)))
        prefix = self._text(node)[: (value.start_byte - node.start_byte) if value is not None else None]
        return Word(prefix + value_word.text, value_word.expansions)

    def _redirects(self, node: Node) -> list[Redirect]:
        kind = node.type
        if kind == "herestring_redirect":
            self.hazards.add("here_string")
            target = node.named_children[-1] if node.named_children else None
            return [Redirect("<<<", None, self._word(target) if target is not None else None)]
        if kind == "heredoc_redirect":
            self.hazards.add("here_document")
            found = [Redirect(node.children[0].type, None, None)]
            for child in node.named_children:
                if child.type.endswith("_redirect"):
                    found.extend(self._redirects(child))
                elif child.type == "heredoc_body":
                    self._words_in(child)
            return found
        if kind != "file_redirect":
            return []
        fd_node = node.child_by_field_name("descriptor")
        destination = node.child_by_field_name("destination")
        operator = next((c.type for c in node.children if not c.is_named), "")
        fd = int(self._text(fd_node)) if fd_node is not None and self._text(fd_node).isdigit() else None
        return [Redirect(operator, fd, self._word(destination) if destination is not None else None)]

    def _check_redirect(self, redirect: Redirect) -> None:
        if redirect.target is not None:
            self._check_word(redirect.target)
        target = redirect.target.text if redirect.target is not None else ""
        if redirect.fd is not None and redirect.fd > 2:
            self.hazards.add("descriptor")
        if target.startswith(("/dev/tcp/", "/dev/udp/")):
            self.hazards.add("network_redirect")
        if redirect.operator in (">&", "<&"):
            if target.isdigit() and int(target) > 2:
                self.hazards.add("descriptor")
            elif target.isdigit() or target == "-":
                return
        if redirect.operator in WRITE_OPERATORS and target not in HARMLESS_TARGETS:
            self.hazards.add("file_write")

    def _check_word(self, word: Word) -> None:
        for expansion in word.expansions:
            hazard = _EXPANSION_HAZARDS.get(expansion)
            if hazard is not None:
                self.hazards.add(hazard)
        if "glob" in word.expansions and word.text[:1] in ("*", "?", "["):
            self.hazards.add("glob")  # could expand to a file named like an option (`-o`, `--output=…`)
        if _SUBSCRIPT.search(word.text):
            self.hazards.add("array_subscript")
        if _CONTROL.search(word.text):
            self.hazards.add("control_character")

    def _word(self, node: Node) -> Word:
        kind = node.type
        raw = self._text(node)
        if kind in ("word", "number"):
            text, glob = unquoted(raw)
            expansions: set[Expansion] = {"glob"} if glob else set()
            if raw.startswith("~") or _ASSIGNMENT_TILDE.match(raw):
                expansions.add("tilde")  # bash expands `of=~/x` too: it has the form of an assignment
            if _BRACE.search(raw):
                expansions.add("brace")
            return Word(text, frozenset(expansions))
        if kind == "raw_string":
            return Word(raw[1:-1])
        if kind == "ansi_c_string":
            return Word(ansi_c(raw[2:-1]))
        if kind in ("string", "translated_string", "concatenation"):
            return self._joined(node, quoted=kind != "concatenation")
        if kind in ("command_substitution", "process_substitution"):
            before = len(self.commands)
            saved = self._substituted
            for child in node.named_children:
                self._statement(child, (), frozenset())
            saved |= {c.program for c in self.commands[before:] if c.program}
            self._substituted = saved
            return Word(raw, frozenset({"command" if kind == "command_substitution" else "process"}))
        expansion: Expansion = {"simple_expansion": "parameter", "expansion": "parameter",
                                "arithmetic_expansion": "arithmetic"}.get(kind, "unknown")  # type: ignore[assignment]
        for child in _word_nodes(node):
            self._word(child)  # substitutions nested in `${x:-$(…)}` still run
        return Word(raw, frozenset({expansion}))

    def _joined(self, node: Node, *, quoted: bool) -> Word:
        """A double-quoted string or a concatenation: its parts, and the text between them, in order."""
        start, end = node.start_byte, node.end_byte
        if quoted:
            start, end = start + (2 if self._source[start:start + 1] == b"$" else 1), end - 1
        text: list[str] = []
        expansions: set[Expansion] = set()
        position = start
        for child in node.children:
            if child.start_byte < start or child.end_byte > end or not child.is_named:
                continue
            gap = self._source[position:child.start_byte].decode(errors="replace")
            text.append(double_quoted(gap) if quoted else gap)
            if child.type == "string_content":
                text.append(double_quoted(self._text(child)))
            else:
                part = self._word(child)
                text.append(part.text)
                expansions |= part.expansions
            position = child.end_byte
        gap = self._source[position:end].decode(errors="replace")
        text.append(double_quoted(gap) if quoted else gap)
        if quoted:
            expansions -= {"glob", "tilde", "brace"}
        elif node.children and node.children[0].type != "word":
            expansions.discard("tilde")
        if not quoted and _BRACE.search(self._text(node)):
            expansions.add("brace")
        return Word("".join(text), frozenset(expansions))


def _word_nodes(node: Node) -> list[Node]:
    """The outermost word-like nodes under `node` (not descending into a word once found)."""
    found: list[Node] = []
    for child in node.named_children:
        if child.type in ("word", "string", "raw_string", "concatenation", "simple_expansion", "expansion",
                          "command_substitution", "process_substitution", "arithmetic_expansion", "number",
                          "ansi_c_string", "translated_string", "variable_assignment"):
            found.append(child)
        else:
            found.extend(_word_nodes(child))
    return found
