"""kcode: the CLI, the agent loop, model backends, configuration, sessions, approvals and the terminal UI.

May import `tools`; reaches `engine` only lazily, inside the local backend and `kcode serve`, so that
`kcode --help` and chat against a remote API never import torch.
"""

__version__ = "0.1.0"
