"""Programs that run another command: where, in their arguments, the command they run is.

`sudo rm -rf ~` deletes the home directory as surely as `rm -rf ~`, so the destructive-command guard and
the approvals must judge the command a wrapper runs, not the wrapper. Each rule here reads a wrapper's own
options (those that take a value, so that value is not mistaken for the program) and says which words
form the wrapped command, or which word is a shell script to parse again (`bash -c STR`). It works on
plain strings, after quote removal; `shell_syntax` maps the indices back to its words.
"""

from __future__ import annotations

from dataclasses import dataclass

SHELLS = frozenset({"sh", "bash", "zsh", "dash", "ksh", "mksh", "ash", "fish"})
# find's actions that run a command: the words up to `;` or `+` are that command, `{}` the found path.
_FIND_EXEC = frozenset({"-exec", "-execdir", "-ok", "-okdir"})
# find's tests: with none of them, find acts on its start paths themselves, not only on things under them.
FIND_TESTS = frozenset({
    "-name", "-iname", "-path", "-ipath", "-wholename", "-iwholename", "-regex", "-iregex", "-type", "-xtype",
    "-newer", "-mtime", "-mmin", "-atime", "-amin", "-ctime", "-cmin", "-size", "-empty", "-user", "-group",
    "-perm", "-links", "-inum", "-samefile", "-mindepth", "-lname", "-ilname", "-uid", "-gid", "-nouser",
    "-nogroup", "-newermt", "-readable", "-writable", "-executable", "-used",
})
# Per wrapper: options that take a separate value. Any other word starting with `-` is a flag.
_VALUE_OPTIONS: dict[str, frozenset[str]] = {
    "sudo": frozenset({"-u", "-g", "-C", "-D", "-h", "-p", "-r", "-t", "-U", "-T", "-R", "--user", "--group",
                       "--chdir", "--host", "--prompt", "--role", "--type", "--other-user", "--command-timeout",
                       "--close-from", "--chroot"}),
    "doas": frozenset({"-u", "-C"}),
    "env": frozenset({"-u", "--unset", "-C", "--chdir", "-S", "--split-string", "-P"}),
    "timeout": frozenset({"-s", "--signal", "-k", "--kill-after"}),
    "nice": frozenset({"-n", "--adjustment"}),
    "exec": frozenset({"-a"}),
    "stdbuf": frozenset({"-i", "-o", "-e", "--input", "--output", "--error"}),
    "taskset": frozenset(),
    "ionice": frozenset({"-c", "--class", "-n", "--classdata"}),
    "setsid": frozenset(),
    "chrt": frozenset({"-T", "--sched-runtime", "-P", "--sched-period", "-D", "--sched-deadline"}),
    "watch": frozenset({"-n", "--interval", "-d", "-g", "-q", "--equexit", "--differences"}),
    "flock": frozenset({"-w", "--wait", "--timeout", "-E", "--conflict-exit-code"}),
    "xargs": frozenset({"-a", "--arg-file", "-d", "--delimiter", "-E", "-I", "-L", "-n", "--max-args", "-P",
                        "--max-procs", "-s", "--max-chars", "--process-slot-var"}),
    "nohup": frozenset(), "time": frozenset({"-f", "--format", "-o", "--output"}), "command": frozenset(),
    "busybox": frozenset(), "unbuffer": frozenset(), "chroot": frozenset({"--userspec", "--groups"}),
    "strace": frozenset({"-e", "-o", "-p", "-s", "-u", "-E", "-a", "-b", "-I", "-O", "-P", "-S", "-X"}),
    "ltrace": frozenset({"-e", "-o", "-p", "-s", "-u", "-a", "-n", "-l"}),
    "catchsegv": frozenset(), "firejail": frozenset(), "proxychains": frozenset({"-f"}),
    "proxychains4": frozenset({"-f"}), "eval": frozenset(),
}
# Options that end the wrapper's own options and change what runs (`command -v` only prints a path).
_RUNS_NOTHING = {"command": frozenset({"-v", "-V"}), "taskset": frozenset({"-p", "--pid"}),
                 "ionice": frozenset({"-p", "--pid", "-P", "--pgid", "-u", "--uid"}),
                 "chrt": frozenset({"-p", "--pid"}), "flock": frozenset()}
# `uv run CMD` and the like, with the options of each that take a value.
_PROJECT_RUNNERS: dict[tuple[str, str], frozenset[str]] = {
    ("uv", "run"): frozenset({"--with", "--with-editable", "--with-requirements", "-p", "--python", "--package",
                              "--extra", "--group", "--only-group", "--env-file", "--directory", "--project",
                              "--index", "--default-index", "-w", "--no-group"}),
    ("poetry", "run"): frozenset({"-C", "--directory", "-P", "--project"}),
    ("pdm", "run"): frozenset({"-p", "--project"}),
    ("pipenv", "run"): frozenset(),
    ("hatch", "run"): frozenset(),
    ("conda", "run"): frozenset({"-n", "--name", "-p", "--prefix", "--cwd"}),
    ("bundle", "exec"): frozenset(),
}
# Options whose value is shell text (env's split string is only split into words, but parsing it is stricter).
_SCRIPT_OPTIONS = frozenset({("env", "-S"), ("env", "--split-string"), ("flock", "-c"), ("flock", "--command")})
# Wrappers whose first operand is not the command: timeout's duration, taskset's mask, chrt's priority,
# chroot's new root, flock's lock file.
_LEADING_OPERANDS = {"timeout": 1, "taskset": 1, "chrt": 1, "chroot": 1, "flock": 1}


@dataclass(frozen=True)
class Wrapped:
    """What a wrapper runs, as indices into its words (the wrapper's own name is index 0).

    `start:stop` is the wrapped command's words, or `script` the index of a word holding shell text
    (`bash -c STR`, `flock f -c STR`); `joined_script` means words from `start` are joined with spaces
    and run as shell text (`eval`, and `watch`, which hands them to `sh -c`). `more_arguments`: the
    wrapper appends arguments only known at run time (xargs). `found_under` lists find's start paths
    (none: `.`), whose found paths replace `{}`; `finds_start` says whether one of those can be a start
    path itself (no test narrows what find matches). `directory` is the index of a directory the
    command runs in (`env -C DIR`).
    """

    wrapper: str
    start: int | None = None
    stop: int | None = None
    script: int | None = None
    joined_script: bool = False
    more_arguments: bool = False
    found_under: tuple[int, ...] = ()
    finds_start: bool = False
    directory: int | None = None


def unwrap(argv: tuple[str, ...]) -> list[Wrapped]:
    """The commands `argv` runs in turn (none for an ordinary program); empty when it wraps nothing."""
    if not argv:
        return []
    program = argv[0].rsplit("/", 1)[-1]
    if program in SHELLS:
        return _shell(program, argv)
    if program == "find":
        return _find(argv)
    if program in ("su", "script"):
        return _dash_c(program, argv)
    if len(argv) > 1 and (program, argv[1]) in _PROJECT_RUNNERS:
        return _project_runner(program, argv)
    if program in _VALUE_OPTIONS:
        return _generic(program, argv)
    return []


def _generic(program: str, argv: tuple[str, ...]) -> list[Wrapped]:
    values = _VALUE_OPTIONS[program]
    index, directory = 1, None
    while index < len(argv):
        word = argv[index]
        if word == "--":
            index += 1
            break
        if program == "env" and "=" in word and not word.startswith("-"):
            index += 1  # env's NAME=value words come before the command
            continue
        if not word.startswith("-") or word == "-":
            break
        if word in _RUNS_NOTHING.get(program, frozenset()):
            return []
        if (program, word) in _SCRIPT_OPTIONS:
            return [Wrapped(program, script=index + 1)] if index + 1 < len(argv) else []
        if program == "env" and word in ("-C", "--chdir"):
            directory = index + 1
        index += 2 if word in values else 1
    index += _LEADING_OPERANDS.get(program, 0)
    if program == "flock" and index < len(argv) and argv[index] in ("-c", "--command"):
        return [Wrapped(program, script=index + 1)] if index + 1 < len(argv) else []
    if index >= len(argv):
        return []  # nothing wrapped (xargs then runs echo)
    if program == "eval" or (program == "watch" and not {"-x", "--exec"} & set(argv[1:index])):
        return [Wrapped(program, start=index, stop=len(argv), joined_script=True)]
    return [Wrapped(program, start=index, stop=len(argv), more_arguments=program == "xargs", directory=directory)]


def _project_runner(program: str, argv: tuple[str, ...]) -> list[Wrapped]:
    """`uv run [options] CMD…` and its kind: run CMD in the project's environment."""
    values = _PROJECT_RUNNERS[(program, argv[1])]
    index = 2
    while index < len(argv) and argv[index].startswith("-"):
        if argv[index] == "--":
            index += 1
            break
        index += 2 if argv[index] in values else 1
    return [Wrapped(f"{program} {argv[1]}", start=index, stop=len(argv))] if index < len(argv) else []


def _shell(program: str, argv: tuple[str, ...]) -> list[Wrapped]:
    """`bash [options] -c STR [name args…]`: STR is the script. Without -c a shell runs a file or stdin."""
    index, takes_script = 1, False
    while index < len(argv) and argv[index][:1] in ("-", "+") and argv[index] not in ("-", "--"):
        word = argv[index]
        if word in ("-o", "+o", "-O", "+O", "--rcfile", "--init-file"):
            index += 2
            continue
        if not word.startswith("--") and "c" in word[1:]:
            takes_script = True
        index += 1
    if takes_script and index < len(argv):
        return [Wrapped(program, script=index)]
    return []


def _dash_c(program: str, argv: tuple[str, ...]) -> list[Wrapped]:
    """`su [user] -c STR` and `script -c STR`: the option's value is shell text."""
    for index, word in enumerate(argv[1:-1], start=1):
        if word in ("-c", "--command"):
            return [Wrapped(program, script=index + 1)]
    return []


def _find(argv: tuple[str, ...]) -> list[Wrapped]:
    """Each `-exec CMD … ;` (or `+`) of a find, with where `{}` comes from."""
    starts: list[int] = []
    index = 1
    while index < len(argv) and argv[index] in ("-H", "-L", "-P"):
        index += 1
    while index < len(argv) and not argv[index].startswith("-") and argv[index] not in ("(", "!"):
        starts.append(index)
        index += 1
    narrowed = any(word in FIND_TESTS for word in argv[index:])
    found: list[Wrapped] = []
    while index < len(argv):
        if argv[index] in _FIND_EXEC:
            stop = index + 1
            while stop < len(argv) and argv[stop] not in (";", "+"):
                stop += 1
            if stop > index + 1:
                found.append(Wrapped("find", start=index + 1, stop=stop, more_arguments=True,
                                     found_under=tuple(starts), finds_start=not narrowed))
            index = stop
        index += 1
    return found
