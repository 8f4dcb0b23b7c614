"""Label selectors as kubectl writes them: `-l app=web,tier!=db,canary,!legacy`.

Equality-based requirements joined by commas (all must hold): `key=value` (also `key==value`),
`key!=value` (true when the label is absent too, as in Kubernetes), `key` (the label exists),
`!key` (it does not). Set-based forms (`key in (a,b)`) are refused with a message saying so.
Pure: no I/O; the command line turns a ValueError into its one-line error.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass

__all__ = ["Selector", "parse"]

# A label key as Kubernetes allows it: an optional DNS prefix and a name of 1-63 characters.
_KEY = re.compile(r"([a-z0-9]([-a-z0-9.]*[a-z0-9])?/)?[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?")
_VALUE = re.compile(r"([A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?)?")


@dataclass(frozen=True)
class Requirement:
    """One comma-separated part of a selector."""

    key: str
    op: str  # "=", "!=", "exists", "!exists"
    value: str = ""

    def holds(self, labels: Mapping[str, str]) -> bool:
        """Whether `labels` satisfy this requirement."""
        if self.op == "exists":
            return self.key in labels
        if self.op == "!exists":
            return self.key not in labels
        if self.op == "=":
            return labels.get(self.key) == self.value
        return labels.get(self.key) != self.value


@dataclass(frozen=True)
class Selector:
    """All requirements of a selector; the empty selector matches everything."""

    requirements: tuple[Requirement, ...] = ()

    def matches(self, labels: Mapping[str, str] | None) -> bool:
        """Whether an object with these labels is selected."""
        found = labels or {}
        return all(requirement.holds(found) for requirement in self.requirements)


def parse(text: str) -> Selector:
    """Parse a selector; raise ValueError saying which part is wrong and what is accepted."""
    requirements: list[Requirement] = []
    for raw in text.split(","):
        part = raw.strip()
        if not part:
            raise ValueError(f"empty requirement in {text!r}: write key=value, key!=value, key or !key")
        if " in " in f" {part} " or " notin " in f" {part} " or "(" in part:
            raise ValueError(f"{part!r}: set-based requirements (in, notin) are not supported; use key=value")
        if "!=" in part:
            key, _, value = part.partition("!=")
            requirements.append(_checked(Requirement(key.strip(), "!=", value.strip()), part))
        elif "=" in part:
            key, _, value = part.partition("==" if "==" in part else "=")
            requirements.append(_checked(Requirement(key.strip(), "=", value.strip()), part))
        elif part.startswith("!"):
            requirements.append(_checked(Requirement(part[1:].strip(), "!exists"), part))
        else:
            requirements.append(_checked(Requirement(part, "exists"), part))
    return Selector(tuple(requirements))


def _checked(requirement: Requirement, part: str) -> Requirement:
    if not _KEY.fullmatch(requirement.key):
        raise ValueError(f"{part!r}: {requirement.key!r} is not a label key")
    if not _VALUE.fullmatch(requirement.value):
        raise ValueError(f"{part!r}: {requirement.value!r} is not a label value")
    return requirement
