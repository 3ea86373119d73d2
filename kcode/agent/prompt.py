"""The prompts the agent starts from: the system prompt, `kcode fix`'s task prompt and the project's rules.

The wording lives in text files under `prompts/` beside this module, so it can be read and changed
without touching code; this module only fills in the blanks.
"""

from __future__ import annotations

import platform
from importlib import resources
from pathlib import Path
from string import Template

from tools.toolset import Toolset

RULES_FILE = "AGENTS.md"
MAX_RULES_BYTES = 8 * 1024
"""AGENTS.md is read into every request; a cap keeps a huge one from eating the context window."""

_COMMANDS_REFUSED_NOTE = (
    "\nYou cannot run shell commands in this session: kcode fix was started without --yes, so every bash "
    "call will be refused. Work with the file viewer, the editor and search, and skip the steps that need "
    "a shell.\n"
)


def load_template(name: str) -> str:
    """The text of `prompts/<name>`, read through importlib.resources so it works from a wheel too."""
    return (resources.files("kcode.agent") / "prompts" / name).read_text(encoding="utf-8")


def project_rules(root: Path, max_bytes: int = MAX_RULES_BYTES) -> str:
    """The AGENTS.md at the workspace root, cut at a line end within `max_bytes` with a note; "" if absent."""
    path = root / RULES_FILE
    if not path.is_file():
        return ""
    data = path.read_bytes()
    if len(data) <= max_bytes:
        return data.decode("utf-8", errors="replace").strip()
    kept = data[:max_bytes]
    line_end = kept.rfind(b"\n")
    if line_end >= max_bytes // 2:
        kept = kept[: line_end + 1]
    text = kept.decode("utf-8", errors="ignore").rstrip()  # "ignore" drops a character cut in half
    return (f"{text}\n\n[{RULES_FILE} is {len(data):,} bytes; only the first {len(kept):,} are shown. "
            f"View {path} for the rest.]")


def system_prompt(workspace: Path, toolset: Toolset, rules: str = "", *, os_name: str | None = None,
                  template: str | None = None) -> str:
    """The system message: where the agent is, what its tools are for, how to work, and the project's rules.

    `template` replaces prompts/system.md (the SWE-bench harness brings its own); it has the same blanks.
    """
    tools = "\n".join(f"- `{name}`: {_first_sentence(_description(toolset, name))}" for name in toolset.names)
    rules_section = f"\n## Project rules (from {RULES_FILE}; they override the advice above)\n\n{rules}\n" \
        if rules else ""
    return Template(template or load_template("system.md")).substitute(
        workspace=str(workspace), os=os_name or _describe_os(), tools=tools, rules=rules_section)


def fix_prompt(task: str, *, commands_allowed: bool) -> str:
    """The first user message of `kcode fix`: the task and a way of working that ends with `submit`."""
    note = "" if commands_allowed else _COMMANDS_REFUSED_NOTE
    return Template(load_template("fix.md")).substitute(task=task.strip(), commands_note=note)


def _description(toolset: Toolset, name: str) -> str:
    tool = toolset.get(name)
    return tool.description if tool is not None else ""


def _first_sentence(text: str) -> str:
    line = text.strip().split("\n", 1)[0]
    end = line.find(". ")
    return line[: end + 1] if end >= 0 else line


def _describe_os() -> str:
    system = platform.system() or "unknown"
    if system == "Darwin":
        return f"macOS {platform.mac_ver()[0]}".strip()
    return f"{system} {platform.release()}".strip()
