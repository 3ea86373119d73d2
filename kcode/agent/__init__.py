"""The agent loop shared by `kcode chat`, `kcode fix` and the SWE-bench harness.

It streams from a backend, runs tool calls through a toolset, and reports everything as events; it never
touches the screen, so the rich UI, the headless printer and the trajectory writer are all just sinks.
"""
