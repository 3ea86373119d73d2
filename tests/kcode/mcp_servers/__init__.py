"""Real MCP servers the MCP tests run, written with the official SDK."""
