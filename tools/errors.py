"""Failures a tool reports back to the model as an error result rather than raising out of dispatch."""


class ToolError(Exception):
    """A mistake the model can fix (bad path, ambiguous edit); the message is written for the model."""


class PathOutsideWorkspace(ToolError):
    """A path that resolves outside every root the toolset allows."""
