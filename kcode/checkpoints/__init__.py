"""Checkpoints: the workspace saved before every step that may change files, so /undo and /rewind can bring
it back. `store` keeps them as commits in a shadow git repository under kcode's data directory (never the
user's own); `steps` ties them to one session's tool calls. May import `kcode.agent`, `kcode.messages`."""
