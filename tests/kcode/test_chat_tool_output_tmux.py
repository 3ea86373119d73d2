"""Blank lines in a command's output as a real `kcode chat` shows them in tmux (issue 13, point 7).

The scripted model `cat`s files whose blank lines come in every shape a user meets: LF and CRLF endings,
lines of only spaces or a tab, coloured output, a long file cut to its head and tail, and a file one line
longer than the preview. Each result must show every blank line where the file has it, at two widths.
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.kcode.openai_server import Reply, ScriptedCall, ScriptedServer
from tests.kcode.test_chat_undo_tmux import ROOT, Tmux

pytestmark = pytest.mark.skipif(shutil.which("tmux") is None, reason="tmux is not installed")

SMALL = "import os\n\n\ndef a():\n    return 1\n\n\ndef b():\n    return 2\n"
SMALL_SHOWN = ["import os", "", "", "def a():", "    return 1", "", "", "def b():", "    return 2"]
FILES = {
    "small.py": (SMALL, SMALL_SHOWN),
    "crlf.py": (SMALL.replace("\n", "\r\n"), SMALL_SHOWN),
    "spaces.py": ("def a():\n    x = 1\n    \n\t\n    return x  \ndef b():\n    pass\n",
                  ["def a():", "    x = 1", "", "", "    return x", "def b():", "    pass"]),
    "eleven.txt": ("".join(f"line {n}\n" if n != 6 else "\n" for n in range(1, 12)),
                   [f"line {n}" if n != 6 else "" for n in range(1, 12)]),
    "big.py": ("import os\nimport sys\n\n\n" + "".join(f"def f{n}():\n    return {n}\n\n\n" for n in range(30)),
               ["import os", "import sys", "", "", "def f0():", "… 112 more lines",
                "    return 28", "", "", "def f29():", "    return 29"]),
}
COLOURED = ("printf '\\033[31mred\\033[0m\\n\\n\\nplain\\n'", ["red", "", "", "plain"])


@pytest.fixture
def tmux(tmp_path: Path) -> Iterator[Tmux]:
    session = Tmux(tmp_path / "tmux.sock")
    yield session
    subprocess.run(["tmux", "-S", str(session.socket), "kill-server"], capture_output=True, timeout=10)


def shown_result(screen: list[str], command: str, length: int) -> list[str]:
    """The `length` lines of the result under the call header `● bash  {command}`, gutter removed."""
    start = screen.index(f"● bash  {command}") + 1
    block = screen[start:start + length]
    assert block[0].startswith("  ⎿  "), block
    return [line[5:] for line in block]


@pytest.mark.parametrize("width", [80, 44])
def test_blank_lines_of_a_commands_output_stay_in_the_chat(tmp_path: Path, tmux: Tmux, openai_server: ScriptedServer,
                                                           width: int) -> None:
    repo = tmp_path / "repo"
    repo.mkdir()
    for name, (text, _) in FILES.items():
        (repo / name).write_bytes(text.encode())
    commands = [f"cat {name}" for name in FILES] + [COLOURED[0]]
    calls = tuple(ScriptedCall("bash", json.dumps({"command": command})) for command in commands)
    openai_server.add(Reply(text="Reading them.", tool_calls=calls), Reply(text="All read."))
    env = {k: v for k, v in os.environ.items() if not k.startswith(("KCODE_", "OPENAI_", "MOONSHOT_", "XDG_", "TMUX"))}
    env |= {"HOME": str(tmp_path), "KCODE_BASE_URL": openai_server.base_url, "KCODE_API_KEY": "k",
            "KCODE_MODEL": "scripted-model", "TERM": "xterm-256color", "PYTHONPATH": str(ROOT)}
    script = tmp_path / "chat.sh"
    script.write_text("".join(f"export {k}={shlex.quote(v)}\n" for k, v in env.items() if k.isidentifier())
                      + f"exec {shlex.quote(sys.executable)} -m kcode chat --yes\n")
    tmux("new-session", "-d", "-s", "chat", "-x", str(width), "-y", "40", "-c", str(repo),
         f"bash {shlex.quote(str(script))}")

    tmux.wait_for("›")  # the prompt is drawn: keys typed earlier could reach the terminal before it reads them
    tmux.type("read the files")
    screen = [line.rstrip() for line in tmux.wait_for("All read.").splitlines()]
    for name, (_, expected) in FILES.items():
        assert shown_result(screen, f"cat {name}", len(expected)) == expected, name
    assert shown_result(screen, COLOURED[0], len(COLOURED[1])) == COLOURED[1]
    tmux.type("/exit")
