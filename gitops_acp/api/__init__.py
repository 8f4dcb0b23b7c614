"""The HTTP API of `serve --http` (DESIGN §11): tokens and roles, tasks, tool calls, events.

    tokens.py     the --api-tokens file, Bearer tokens, roles
    app.py        the /v1 routes: authentication, roles, bodies, the JSON error shape (errors.py)
    tasks.py      /v1/tasks: list, get, create, cancel
    toolcalls.py  /v1/toolcalls: list, get, approve, reject, respond
    reading.py    the readers `get` and `describe` use, on one thread
    writer.py     commits to main for the callers: group commit, compare-and-swap, push
    openapi.py    GET /v1/openapi.json
    events.py     GET /v1/events (Server-Sent Events)
    checkpoints.py  GET /v1/tasks/{name}/history, GET /v1/whoami (what the web view reads)
    web.py        the web view at / (web/: index.html, app.js, app.css) and its text for curl

`cli/commands/serve.py` builds a `Service` and passes `app.routes(service)` to `webhooks.serve`.
"""
