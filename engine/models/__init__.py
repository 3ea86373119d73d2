"""Model definitions: one file per architecture, parameters named exactly as in the checkpoints."""
