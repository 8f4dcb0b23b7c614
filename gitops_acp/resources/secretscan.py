"""Recognise secrets that someone is about to commit, without ever repeating them.

Secrets never belong in the repository (DESIGN §2): a pushed key is leaked for good, whatever a
later commit does. Two checks serve the schema and the loader: a *name* that says "I hold a secret"
(an env var `OPENAI_API_KEY` with a literal value, an `apiKey:` field), and a *value* shaped like a
well-known credential (`sk-...`, `ghp_...`, a PEM private key) wherever it appears. Callers report
the field, never the value.
"""

from __future__ import annotations

import re

__all__ = ["SECRET_WORDS", "find_token", "is_secret_name"]

# Whole words only, so KEYBOARD_LAYOUT or GIT_AUTHOR_NAME are not taken for secrets.
SECRET_WORDS = frozenset(
    {
        "KEY",
        "KEYS",
        "APIKEY",
        "TOKEN",
        "TOKENS",
        "SECRET",
        "SECRETS",
        "PASSWORD",
        "PASSWORDS",
        "PASSWD",
        "CREDENTIAL",
        "CREDENTIALS",
        "AUTH",
        "AUTHORIZATION",
    }
)
# Words of an identifier: `OPENAI_API_KEY`, `X-Api-Key`, `apiKey`, `bearerToken`.
_WORD = re.compile(r"[A-Z]+(?![a-z])|[A-Z]?[a-z]+|\d+")


def is_secret_name(name: str) -> bool:
    """Return whether an env var, header or field name says that its value is a secret."""
    return any(word.upper() in SECRET_WORDS for word in _WORD.findall(name))


# (what it is, pattern). The look-behinds keep words that merely end in "sk-" ("task-", "disk-")
# from matching; the minimum lengths keep examples like "sk-..." in prose from matching.
_TOKENS: tuple[tuple[str, re.Pattern[str]], ...] = (
    ("an Anthropic API key", re.compile(r"(?<![A-Za-z0-9_-])sk-ant-[A-Za-z0-9_-]{20,}")),
    ("an OpenAI-style API key", re.compile(r"(?<![A-Za-z0-9_-])sk-[A-Za-z0-9_-]{20,}")),
    (
        "a GitHub token",
        re.compile(r"(?<![A-Za-z0-9_])(?:gh[opsur]_[A-Za-z0-9]{20,}|github_pat_[A-Za-z0-9_]{20,})"),
    ),
    ("a GitLab token", re.compile(r"(?<![A-Za-z0-9_-])glpat-[A-Za-z0-9_-]{20,}")),
    ("a Slack token", re.compile(r"(?<![A-Za-z0-9_-])xox[abposr]-[A-Za-z0-9-]{10,}")),
    ("an AWS access key id", re.compile(r"(?<![A-Z0-9])AKIA[0-9A-Z]{16}(?![0-9A-Z])")),
    ("a private key", re.compile(r"-----BEGIN [A-Z0-9 ]*PRIVATE KEY( BLOCK)?-----")),
)


def find_token(text: str) -> str | None:
    """Return what kind of credential `text` contains (e.g. "a GitHub token"), or None."""
    for label, pattern in _TOKENS:
        if pattern.search(text):
            return label
    return None
