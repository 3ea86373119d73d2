"""The SWE-bench harness: datasets, workspace preparation and pruning, runs, environments, grading, reports.

May import `kcode` (agent loop, backends) and `tools`; never the REPL or its UI.
"""
