"""The terminal UI: everything kcode draws on a screen or asks at a keyboard.

Owns the chat renderer (`render`, its live region in `live_view`), the headless progress and
JSON-lines sinks of `kcode fix` (`headless`), the approval question (`approval_prompt`), the chat's
input line (`repl_input`), and the one-line descriptions of tool calls they share (`describe`).
Every piece consumes agent events or asks the user a question; none holds agent logic.

This package and `kcode/cli.py` are the only places that may import rich and prompt_toolkit, so the
agent loop stays free of any screen. It imports nothing on its own: import the module you need.
"""
