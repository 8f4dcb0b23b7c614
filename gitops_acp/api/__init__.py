"""The HTTP API of `serve --http` (DESIGN §11): tokens and roles, tasks, tool calls, events."""
