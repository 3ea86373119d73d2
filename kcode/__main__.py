"""`python -m kcode` runs the CLI."""

from kcode.cli import main

main()
