"""API tokens and roles (`serve --api-tokens FILE`, DESIGN §11): who is calling, and what they may do.

The file is a YAML list, mounted like a secret; it holds the sha256 of each token, never a token:

    - name: Alice Example          # the author of the commits made for her
      email: alice@example.com
      roles: [operator, approver]  # viewer, operator, approver
      sha256: 9f86d081884c7d65...  # `printf %s "$TOKEN" | sha256sum`

`Authorization: Bearer <token>` is hashed and compared with every entry in constant time
(`hmac.compare_digest`, no early exit), so neither the answer's timing nor a log line tells which
part of a token was right. Roles (docs/api.md): `viewer` reads; `operator` creates and cancels
tasks; `approver` decides tool calls. `operator` and `approver` include `viewer` (one cannot act on
what one cannot see, as Kubernetes' `edit` includes `view`); neither includes the other.
"""

from __future__ import annotations

import hashlib
import hmac
import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gitops_acp.errors import UserError

__all__ = ["ROLES", "Caller", "Tokens", "digest", "load"]

VIEWER = "viewer"
OPERATOR = "operator"
APPROVER = "approver"
ROLES = (VIEWER, OPERATOR, APPROVER)
#: What each role grants besides itself.
_IMPLIES = {OPERATOR: {VIEWER}, APPROVER: {VIEWER}, VIEWER: set[str]()}
_HEX64 = re.compile(r"^[0-9a-f]{64}$")
_EMAIL = re.compile(r"^[^@\s<>]+@[^@\s<>]+$")
_FIELDS = ("name", "email", "roles", "sha256")


@dataclass(frozen=True)
class Caller:
    """The person (or system) a valid token stands for."""

    name: str
    email: str
    roles: frozenset[str]  # as granted, implied roles included

    @property
    def identity(self) -> tuple[str, str]:
        """(name, email): the author of the commits made for this caller."""
        return self.name, self.email

    def __str__(self) -> str:
        return f"{self.name} <{self.email}>"

    def has(self, role: str) -> bool:
        """Whether the caller holds `role`."""
        return role in self.roles


def digest(token: str | bytes) -> str:
    """The hex sha256 of a token, as the tokens file holds it."""
    return hashlib.sha256(token.encode() if isinstance(token, str) else token).hexdigest()


class Tokens:
    """The entries of a tokens file; `authenticate` finds the caller of an Authorization header."""

    def __init__(self, entries: Iterable[tuple[str, Caller]]) -> None:
        self._entries = [(bytes.fromhex(sha), caller) for sha, caller in entries]

    def __len__(self) -> int:
        return len(self._entries)

    def authenticate(self, authorization: str | None) -> Caller | None:
        """The caller whose token the header carries (`Bearer <token>`), or None."""
        if not authorization:
            return None
        scheme, _, token = authorization.strip().partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            return None
        given = hashlib.sha256(token.strip().encode()).digest()
        found: Caller | None = None
        for sha, caller in self._entries:  # every entry, whatever matched: no early exit
            if hmac.compare_digest(given, sha):
                found = caller
        return found


def load(path: Path) -> Tokens:
    """Read the tokens file at `path`; a bad file is one UserError naming the file, entry and field."""
    import yaml

    where = f"--api-tokens {path}"
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise UserError(f"{where}: cannot read it ({exc.strerror})") from exc
    try:
        document = yaml.load(data, Loader=yaml.CSafeLoader) if data.strip() else []
    except Exception as exc:
        raise UserError(f"{where}: not YAML ({' '.join(str(exc).split())})") from None
    if not isinstance(document, list):
        raise UserError(f"{where}: expected a YAML list of {{name, email, roles, sha256}} entries")
    entries: list[tuple[str, Caller]] = []
    seen: dict[str, int] = {}
    for index, entry in enumerate(document, start=1):
        entries.append(_entry(where, index, entry))
        sha, caller = entries[-1]
        if sha in seen:
            raise UserError(
                f"{where}: entry {index} ({caller.name}): sha256: the same token as entry {seen[sha]}"
            )
        seen[sha] = index
    return Tokens(entries)


def _entry(where: str, index: int, entry: Any) -> tuple[str, Caller]:
    if not isinstance(entry, dict):
        raise UserError(f"{where}: entry {index}: expected a mapping with name, email, roles, sha256")
    label = f"{where}: entry {index}" + (f" ({entry['name']})" if isinstance(entry.get("name"), str) else "")
    unknown = sorted(str(key) for key in entry if key not in _FIELDS)
    if unknown:
        hint = " (write the token's sha256, never the token)" if "token" in unknown else ""
        raise UserError(f"{label}: {unknown[0]}: unknown field; allowed: {', '.join(_FIELDS)}{hint}")
    for field in _FIELDS:
        if field not in entry:
            raise UserError(f"{label}: {field}: missing")
    name, email, roles, sha = entry["name"], entry["email"], entry["roles"], entry["sha256"]
    if not isinstance(name, str) or not name.strip() or any(c in name for c in "<>\n"):
        raise UserError(f"{label}: name: expected a person's name (no <, > or newline)")
    if not isinstance(email, str) or not _EMAIL.match(email):
        raise UserError(f"{label}: email: expected an e-mail address such as alice@example.com")
    if not isinstance(roles, list) or not roles:
        raise UserError(f"{label}: roles: expected a list of {', '.join(ROLES)}")
    for role in roles:
        if role not in ROLES:
            raise UserError(f"{label}: roles: {role!r} is not a role; use {', '.join(ROLES)}")
    if not isinstance(sha, str) or not _HEX64.match(sha.lower()):
        raise UserError(
            f"{label}: sha256: expected 64 hex digits, the sha256 of the token "
            '(printf %s "$TOKEN" | sha256sum)'
        )
    granted = set(roles)
    for role in roles:
        granted |= _IMPLIES[role]
    return sha.lower(), Caller(name.strip(), email, frozenset(granted))
