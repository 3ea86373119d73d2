"""Tools from Model Context Protocol servers, offered to the agent beside the built-in ones.

Owns the `[mcp_servers.NAME]` configuration (`config`), the connections to the servers (`connection`, the
only module that imports the `mcp` SDK, run on one background event-loop thread), the adapter that turns a
server's tool into a kcode `Tool` (`tools`, `schema`, `results`) and the status lines `kcode mcp list` and
`/mcp` print (`status`). Importing this package imports no SDK: a session without MCP servers never pays
for it. May import `kcode.errors` and `tools`.
"""
