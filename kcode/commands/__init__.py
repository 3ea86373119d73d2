"""The commands behind the CLI: each builds its agent from settings and drives it, one module a command."""
