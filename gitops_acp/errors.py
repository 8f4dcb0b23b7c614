"""The exception tree of gitops-acp.

Every error the program raises on purpose is an ``ACPError``; the command line prints its message
as one line (``error: ...``) and exits 1. Whether an error is worth retrying is in its type, not in
string matching at the call site::

    ACPError
    ├── UserError                 bad input from a person: a command-line argument, a repository path
    ├── ResourceError             a resource file that cannot be used (file, line, field, what to do)
    ├── SecretError               a secretKeyRef that does not resolve (never carries the value)
    ├── StoreError                the git store cannot do what was asked
    │   ├── ConflictError         a compare-and-swap on a ref lost the race: re-read and retry
    │   ├── LockedError           a ref or packed-refs is locked by another process (or was left
    │   │                         locked by a killed one): wait a bounded time, never a lost race
    │   └── RemoteError           the git remote could not be reached, or refused us: retry later
    ├── StaleError                a checkpoint computed from a state another reconcile has since
    │                             ended (a tool call cancelled with its task): reconcile again
    ├── LLMError                  a chat completion failed
    │   ├── TemporaryLLMError     408/409/429/5xx, timeouts, connection errors: back off and retry
    │   └── PermanentLLMError     any other 4xx: fail the task with the provider's message
    ├── MCPError                  an MCP server could not run a tool call: a JSON-RPC error, a timeout,
    │   │                         a server that is not connected or crashed (the text goes to the model)
    │   └── MCPRefusedError       the server answered a request with a JSON-RPC error: it is up and
    │                             says no (an MCP task it does not know): asking again will not help
    └── ForgeError                a forge API (GitHub, Gitea, GitLab) refused or failed a request
        ├── TemporaryForgeError   429, a secondary rate limit, 5xx, timeouts: back off and retry
        └── PermanentForgeError   a bad token, an unknown repository, a refused request: say so
"""

from __future__ import annotations


class ACPError(Exception):
    """Base of every error gitops-acp raises on purpose."""


class UserError(ACPError):
    """Bad input from a person: an argument, a path, a name."""


class ResourceError(ACPError):
    """A resource file that cannot be used; the message names file, line, field and the fix."""

    def __init__(self, message: str, *, path: str = "", line: int = 0) -> None:
        super().__init__(message)
        self.path = path
        self.line = line

    def __str__(self) -> str:
        message = super().__str__()
        if self.path:
            return f"{self.path}:{self.line}: {message}" if self.line else f"{self.path}: {message}"
        return message


class SecretError(ACPError):
    """A secretKeyRef that does not resolve. The message never carries a secret value."""


class StoreError(ACPError):
    """The git store cannot do what was asked."""


class ConflictError(StoreError):
    """A compare-and-swap on a ref lost the race: re-read the tip and retry."""


class LockedError(StoreError):
    """A git lock file (`<ref>.lock`, `packed-refs.lock`) exists: someone else holds the ref, or a
    killed process left the lock behind. Not a lost race: the ref did not move."""

    def __init__(self, message: str, *, lock: str) -> None:
        super().__init__(message)
        self.lock = lock  # the lock file's path


class RemoteError(StoreError):
    """A fetch or push failed as a whole (unreachable, refused, authentication): retry with backoff."""


class LLMError(ACPError):
    """A chat completion failed."""

    retryable: bool = False

    def __init__(
        self, message: str, *, status_code: int | None = None, retry_after: float | None = None
    ) -> None:
        super().__init__(message)
        self.status_code = status_code
        self.retry_after = retry_after


class TemporaryLLMError(LLMError):
    """Worth retrying with backoff: 408/409/429/5xx, timeouts, connection errors."""

    retryable = True


class PermanentLLMError(LLMError):
    """Not worth retrying: any other 4xx. The message is the provider's."""


class MCPError(ACPError):
    """An MCP server could not run a tool call; the message says why and is shown to the model."""


class MCPRefusedError(MCPError):
    """The MCP server answered with a JSON-RPC error (not a timeout, not a lost connection)."""


class StaleError(ACPError):
    """A checkpoint would move a resource out of a terminal phase another reconcile just committed.

    Raised by the reactor before anything is written; the reconcile is run again from the new state
    (so a tool call cancelled with its task is never started afterwards).
    """


class ForgeError(ACPError):
    """A forge API request failed. The message never carries the token."""

    retryable: bool = False

    def __init__(self, message: str, *, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class TemporaryForgeError(ForgeError):
    """Worth retrying later: rate limits, 5xx, timeouts, connection errors."""

    retryable = True


class PermanentForgeError(ForgeError):
    """Not worth retrying until the configuration changes: a bad token, an unknown repository."""
