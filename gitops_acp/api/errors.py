"""The API's one error shape: `{"error": {"code": N, "message": "..."}}`, the message as `validate` words it.

Handlers raise `ApiError(code, message)`; the routes turn it (and the program's own errors) into
that JSON. A message never carries a secret: resource messages come from the loader, which never
echoes a value it flagged as a secret, and git messages are redacted of URLs' credentials.
"""

from __future__ import annotations

from typing import Any

from starlette.responses import JSONResponse

from gitops_acp.errors import ACPError
from gitops_acp.store.git import redact_url

__all__ = ["ApiError", "error_response", "from_program_error"]


class ApiError(Exception):
    """An answer other than success: its HTTP status code and one-line message."""

    def __init__(self, code: int, message: str, *, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.headers = headers or {}


def error_response(code: int, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
    """The JSON error answer."""
    body: dict[str, Any] = {"error": {"code": code, "message": " ".join(message.split())}}
    return JSONResponse(body, status_code=code, headers=headers)


def from_program_error(exc: ACPError, *, code: int) -> ApiError:
    """An error of the program (a refused commit, an unreachable remote) as an answer with `code`."""
    return ApiError(code, redact_url(str(exc)))
