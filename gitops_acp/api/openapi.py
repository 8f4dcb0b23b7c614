"""`GET /v1/openapi.json`: the OpenAPI 3.1 document of the API, written by hand beside the handlers.

Hand-written rather than generated: the objects returned are the resources' own documents (as
`get -o json` prints them), whose schema is the YAML's, so the document describes their envelope
and leaves the spec and status open. The end-to-end tests validate the running server's real
answers against it with openapi-core (tests/e2e/test_api.py), so it cannot drift unnoticed.
"""

from __future__ import annotations

from typing import Any

__all__ = ["document"]

_JSON = "application/json"


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _answer(description: str, schema: str) -> dict[str, Any]:
    return {"description": description, "content": {_JSON: {"schema": _ref(schema)}}}


_ERRORS = {
    "400": "the body is empty or not JSON",
    "401": "no valid token (Authorization: Bearer <token>)",
    "403": "the token lacks the role, or the API is disabled (no --api-tokens)",
    "404": "no such object",
    "409": "a conflict: the name exists, a decision was made, the remote refused the push",
    "413": "the body is over 1 MiB",
    "422": "invalid input, with the message `gitops-acp validate` gives",
    "503": "main could not be written now (an unreachable remote, main kept moving): try again",
}


def _errors(*codes: str) -> dict[str, Any]:
    return {code: _answer(_ERRORS[code], "Error") for code in codes}


def _body(schema: str) -> dict[str, Any]:
    return {"required": True, "content": {_JSON: {"schema": _ref(schema)}}}


_NAME = {
    "name": "name",
    "in": "path",
    "required": True,
    "schema": {"type": "string", "pattern": "^[a-z0-9]([-a-z0-9]*[a-z0-9])?$", "maxLength": 63},
}


def _query(name: str, description: str, schema: dict[str, Any] | None = None) -> dict[str, Any]:
    return {
        "name": name,
        "in": "query",
        "required": False,
        "description": description,
        "schema": schema or {"type": "string"},
    }


_PAGE = [
    _query(
        "limit",
        "at most this many, by name (1-1000, default 100)",
        {"type": "integer", "minimum": 1, "maximum": 1000},
    ),
    _query("continue", "the `continue` of the previous page"),
    _query("all", "also archived objects (DESIGN §9)", {"type": "boolean"}),
]

_OBJECT = {
    "type": "object",
    "required": ["apiVersion", "kind", "metadata"],
    "properties": {
        "apiVersion": {"type": "string"},
        "kind": {"type": "string"},
        "metadata": {
            "type": "object",
            "required": ["name"],
            "properties": {
                "name": {"type": "string"},
                "labels": {"type": "object", "additionalProperties": {"type": "string"}},
                "annotations": {"type": "object", "additionalProperties": {"type": "string"}},
            },
        },
        "spec": {"type": "object"},
        "status": {"type": ["object", "null"]},
    },
}

_SCHEMAS: dict[str, Any] = {
    "Error": {
        "type": "object",
        "required": ["error"],
        "additionalProperties": False,
        "properties": {
            "error": {
                "type": "object",
                "required": ["code", "message"],
                "additionalProperties": False,
                "properties": {"code": {"type": "integer"}, "message": {"type": "string"}},
            }
        },
    },
    "Task": {
        **_OBJECT,
        "description": "a Task as `get task NAME -o json` shows it (status.contextWindow: its messages)",
    },
    "ToolCall": {**_OBJECT, "description": "a ToolCall as `get toolcall NAME -o json` shows it"},
    "TaskList": {
        "type": "object",
        "required": ["items", "continue"],
        "additionalProperties": False,
        "properties": {
            "items": {"type": "array", "items": _ref("Task")},
            "continue": {"type": ["string", "null"]},
        },
    },
    "ToolCallList": {
        "type": "object",
        "required": ["items", "continue"],
        "additionalProperties": False,
        "properties": {
            "items": {"type": "array", "items": _ref("ToolCall")},
            "continue": {"type": ["string", "null"]},
        },
    },
    "Reference": {
        "type": "object",
        "required": ["name"],
        "properties": {"name": {"type": "string"}},
    },
    "NewTask": {
        "type": "object",
        "description": "a Task's spec fields (ACP's), with its name (or generateName) and labels",
        "additionalProperties": False,
        "properties": {
            "name": {"type": "string", "maxLength": 63},
            "generateName": {"type": "string", "maxLength": 57},
            "agentRef": _ref("Reference"),
            "userMessage": {"type": "string"},
            "contextWindow": {"type": "array", "items": {"type": "object"}},
            "contactChannelRef": _ref("Reference"),
            "responseUrl": {"type": "string"},
            "labels": {"type": "object", "additionalProperties": {"type": "string"}},
            "forkFrom": {
                "type": "object",
                "description": "start from this task's context window at a checkpoint (DESIGN §12)",
                "required": ["task"],
                "additionalProperties": False,
                "properties": {
                    "task": {"type": "string"},
                    "commit": {"type": "string", "description": "a checkpoint commit; default: the newest"},
                },
            },
        },
    },
    "FollowUp": {
        "type": "object",
        "required": ["content"],
        "additionalProperties": False,
        "properties": {"content": {"type": "string", "minLength": 1}},
    },
    "FollowUpSent": {
        "type": "object",
        "required": ["name", "followUp", "path", "commit"],
        "properties": {
            "name": {"type": "string"},
            "followUp": {"type": "integer", "description": "its number: spec.followUps[followUp - 1]"},
            "path": {"type": "string", "description": "the Task's file on main"},
            "commit": {"type": "string"},
        },
    },
    "Cancelled": {
        "type": "object",
        "required": ["name", "cancelled", "commit"],
        "properties": {
            "name": {"type": "string"},
            "cancelled": {"type": "boolean"},
            "removed": {"type": ["string", "null"], "description": "the file removed from main"},
            "commit": {"type": "string"},
        },
    },
    "Approve": {
        "type": "object",
        "additionalProperties": False,
        "properties": {"comment": {"type": "string"}},
    },
    "Reject": {
        "type": "object",
        "required": ["reason"],
        "additionalProperties": False,
        "properties": {"reason": {"type": "string"}},
    },
    "Respond": {
        "type": "object",
        "required": ["response"],
        "additionalProperties": False,
        "properties": {"response": {"type": "string"}},
    },
    "History": {
        "type": "object",
        "required": ["branch", "items"],
        "additionalProperties": False,
        "properties": {
            "branch": {"type": "string", "description": "the status branch read"},
            "items": {
                "type": "array",
                "description": "the task's checkpoint commits, oldest first (the newest `limit`)",
                "items": {
                    "type": "object",
                    "required": ["commit", "time", "from", "to", "detail"],
                    "additionalProperties": False,
                    "properties": {
                        "commit": {"type": "string"},
                        "time": {"type": "string", "description": "the commit's time, UTC"},
                        "from": {"type": "string", "description": "the phase before (- if unknown)"},
                        "to": {"type": "string"},
                        "detail": {"type": "string", "description": "statusDetail at that commit"},
                    },
                },
            },
        },
    },
    "Caller": {
        "type": "object",
        "required": ["name", "email", "roles"],
        "additionalProperties": False,
        "properties": {
            "name": {"type": "string"},
            "email": {"type": "string"},
            "roles": {"type": "array", "items": {"enum": ["approver", "operator", "viewer"]}},
        },
    },
    "Decided": {
        "type": "object",
        "required": ["name", "decision", "path", "commit"],
        "properties": {
            "name": {"type": "string"},
            "decision": {"enum": ["approved", "rejected", "answered"]},
            "path": {"type": "string", "description": "the record's file on main"},
            "commit": {"type": "string"},
        },
    },
}


def _decision(summary: str, body: str) -> dict[str, Any]:
    return {
        "post": {
            "summary": summary,
            "description": "role: approver; the channel's approvers apply",
            "parameters": [_NAME],
            "requestBody": _body(body),
            "responses": {
                "200": _answer("committed on main as the caller", "Decided"),
                **_errors("400", "401", "403", "404", "409", "413", "422", "503"),
            },
        }
    }


def document(*, events: bool = False) -> dict[str, Any]:
    """The OpenAPI 3.1 document (with `GET /v1/events` when it is served)."""
    paths: dict[str, Any] = {
        "/v1/tasks": {
            "get": {
                "summary": "list tasks",
                "description": "role: viewer",
                "parameters": [
                    _query(
                        "q",
                        "only tasks whose name contains this text, in any case (names only: a search "
                        "reads no other task's file); with the other filters and paging",
                        {"type": "string", "maxLength": 200},
                    ),
                    _query("agent", "only tasks of this Agent"),
                    _query("phase", "only tasks in this phase, e.g. FinalAnswer"),
                    _query("selector", "a label selector, e.g. team=a,!draft"),
                    *_PAGE,
                ],
                "responses": {
                    "200": _answer("one page of tasks", "TaskList"),
                    **_errors("401", "403", "422"),
                },
            },
            "post": {
                "summary": "create a task",
                "description": "role: operator; committed to main as the caller (`traceparent` is kept)",
                "requestBody": _body("NewTask"),
                "responses": {
                    "201": {
                        **_answer("committed on main", "Task"),
                        "headers": {
                            "Location": {"schema": {"type": "string"}, "description": "/v1/tasks/<name>"},
                            "X-Commit": {"schema": {"type": "string"}, "description": "the commit on main"},
                        },
                    },
                    **_errors("400", "401", "403", "409", "413", "422", "503"),
                },
            },
        },
        "/v1/tasks/{name}": {
            "get": {
                "summary": "one task, with its context window (archived ones too)",
                "description": "role: viewer",
                "parameters": [_NAME],
                "responses": {"200": _answer("the task", "Task"), **_errors("401", "403", "404", "422")},
            },
            "delete": {
                "summary": "cancel a task: its file leaves main, as the caller",
                "description": "role: operator",
                "parameters": [_NAME],
                "responses": {
                    "200": _answer("removed from main", "Cancelled"),
                    **_errors("401", "403", "404", "409", "422", "503"),
                },
            },
        },
        "/v1/tasks/{name}/messages": {
            "post": {
                "summary": "send a follow-up: appended to the Task's spec.followUps on main, as the caller",
                "description": "role: operator; answered after the task's current answer (DESIGN §12)",
                "parameters": [_NAME],
                "requestBody": _body("FollowUp"),
                "responses": {
                    "201": {
                        **_answer("committed on main", "FollowUpSent"),
                        "headers": {
                            "Location": {"schema": {"type": "string"}, "description": "/v1/tasks/<name>"},
                            "X-Commit": {"schema": {"type": "string"}, "description": "the commit on main"},
                        },
                    },
                    **_errors("400", "401", "403", "404", "409", "413", "422", "503"),
                },
            }
        },
        "/v1/tasks/{name}/history": {
            "get": {
                "summary": "a task's checkpoint commits, as `gitops-acp history task NAME` shows them",
                "description": "role: viewer",
                "parameters": [
                    _NAME,
                    _query(
                        "limit",
                        "the newest this many (1-1000, default 100)",
                        {"type": "integer", "minimum": 1, "maximum": 1000},
                    ),
                ],
                "responses": {
                    "200": _answer("its checkpoints, oldest first", "History"),
                    **_errors("401", "403", "404", "422"),
                },
            }
        },
        "/v1/whoami": {
            "get": {
                "summary": "the caller: name, email and roles (the web view shows what they allow)",
                "description": "any valid token",
                "responses": {"200": _answer("the caller", "Caller"), **_errors("401", "403")},
            }
        },
        "/v1/toolcalls": {
            "get": {
                "summary": "list tool calls",
                "description": "role: viewer",
                "parameters": [
                    _query("phase", "only calls in this phase, e.g. AwaitingHumanApproval"),
                    _query("task", "only the calls of this task"),
                    *_PAGE,
                ],
                "responses": {
                    "200": _answer("one page of tool calls", "ToolCallList"),
                    **_errors("401", "403", "422"),
                },
            }
        },
        "/v1/toolcalls/{name}": {
            "get": {
                "summary": "one tool call",
                "description": "role: viewer",
                "parameters": [_NAME],
                "responses": {
                    "200": _answer("the tool call", "ToolCall"),
                    **_errors("401", "403", "404", "422"),
                },
            }
        },
        "/v1/toolcalls/{name}/approve": _decision("approve a pending tool call", "Approve"),
        "/v1/toolcalls/{name}/reject": _decision("reject a pending tool call", "Reject"),
        "/v1/toolcalls/{name}/respond": _decision("answer a pending question to a human", "Respond"),
        "/v1/openapi.json": {
            "get": {
                "summary": "this document",
                "security": [],
                "responses": {
                    "200": {"description": "OpenAPI 3.1", "content": {_JSON: {"schema": {"type": "object"}}}}
                },
            }
        },
    }
    if events:
        paths["/v1/events"] = {
            "get": {
                "summary": "checkpoint events (Server-Sent Events); Last-Event-ID resumes",
                "description": "role: viewer",
                "responses": {
                    "200": {
                        "description": "text/event-stream",
                        "content": {"text/event-stream": {"schema": {"type": "string"}}},
                    },
                    **_errors("401", "403"),
                },
            }
        }
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "gitops-acp",
            "version": "v1",
            "description": "The HTTP API of `gitops-acp serve --http` (DESIGN §11; docs/api.md).",
        },
        "servers": [{"url": "/"}],
        "security": [{"bearer": []}],
        "paths": paths,
        "components": {
            "schemas": _SCHEMAS,
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        },
    }
