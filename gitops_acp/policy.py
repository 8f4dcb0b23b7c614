"""The operator's policy (DESIGN §10): what people who can push to `main` may make the reconciler do.

    serve --policy /etc/acp/policy.yaml          (mounted like a secret; never read from the repository)

    mcp:
      allowedCommands: ["npx", "uvx", "/opt/tools/*"]   # stdio MCP servers: globs on `command`
      allowedUrls: ["https://mcp.example.com/*"]        # Streamable HTTP MCP servers
    responseUrls: ["https://hooks.example.com/*"]       # where a Task's answer may be POSTed
    signers:
      allowedSignersFile: /etc/acp/allowed_signers     # git's ssh format (gpg.ssh.allowedSignersFile)
      gpgHome: /etc/acp/gnupg                          # optional: a gpg home whose trusted keys sign
      signingKey: /etc/acp/reconciler_ed25519          # optional: signs the reconciler's proposals
      requireSignedMain: true                          # apply only verified commits of main

Without a policy everything is allowed, as before, and `serve` says so once at start. With one, what
it does not allow is refused before anything happens: a stdio command that no `allowedCommands`
glob matches is never spawned, an MCPServer `env` may not set a loader variable (`PATH`,
`LD_PRELOAD`, ...), and a URL must match an allowed glob, where a link-local or cloud-metadata
address (169.254.169.254, `metadata.google.internal`, fe80::/10, ...) is refused unless a pattern
names its host literally. A missing list allows nothing of its kind.

Hosts named by DNS are resolved when checked, so a name that points at a metadata address is
caught too; a name that resolves differently later (DNS rebinding) is not: for that, the network
(an egress policy) is the place. Pure apart from that lookup: no git, no I/O besides reading the
file once.
"""

from __future__ import annotations

import fnmatch
import ipaddress
import socket
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import yaml

from gitops_acp.errors import UserError

__all__ = ["LOADER_VARIABLES", "Policy", "describe", "load"]

#: Environment variables that change which code a process loads: an MCPServer may not set them.
LOADER_VARIABLES = frozenset(
    {
        "PATH",
        "LD_PRELOAD",
        "LD_LIBRARY_PATH",
        "LD_AUDIT",
        "DYLD_INSERT_LIBRARIES",
        "DYLD_LIBRARY_PATH",
        "PYTHONPATH",
        "PYTHONSTARTUP",
        "PYTHONHOME",
        "NODE_OPTIONS",
        "NODE_PATH",
        "PERL5LIB",
        "PERL5OPT",
        "RUBYLIB",
        "RUBYOPT",
        "JAVA_TOOL_OPTIONS",
        "BASH_ENV",
        "ENV",
    }
)
#: Host names of cloud metadata services (their addresses are link-local or listed below).
_METADATA_HOSTS = frozenset({"metadata.google.internal", "metadata", "metadata.azure.com", "instance-data"})
_METADATA_ADDRESSES = frozenset(
    ipaddress.ip_address(a) for a in ("169.254.169.254", "169.254.170.2", "fd00:ec2::254", "100.100.100.200")
)
_FIELDS = {"mcp": {"allowedCommands", "allowedUrls"}, "responseUrls": None, "signers": None}
_SIGNER_FIELDS = {"allowedSignersFile", "gpgHome", "requireSignedMain", "signingKey"}


@dataclass(frozen=True)
class Policy:
    """A loaded policy (see the module docstring); `source` names the file in messages."""

    source: str
    allowed_commands: tuple[str, ...] = ()
    allowed_urls: tuple[str, ...] = ()
    response_urls: tuple[str, ...] = ()
    allowed_signers_file: Path | None = None
    gpg_home: Path | None = None
    require_signed_main: bool = False
    signing_key: Path | None = None  # ssh private key the reconciler signs its proposal commits with
    resolve: Any = field(default=socket.getaddrinfo, repr=False, compare=False)  # tests inject one

    @property
    def has_signers(self) -> bool:
        """Whether allowed signers are configured (ssh, gpg or both)."""
        return self.allowed_signers_file is not None or self.gpg_home is not None

    def refuse_mcp(
        self, transport: str, command: str | None, env: Sequence[str], url: str | None
    ) -> str | None:
        """Why an MCP server with this command, these environment variable names or this URL may
        not run (None: it may)."""
        if transport == "stdio":
            if not command or not any(_glob(command, pattern) for pattern in self.allowed_commands):
                return (
                    f"command {command!r} is not allowed by the policy {self.source} "
                    f"(mcp.allowedCommands: {', '.join(self.allowed_commands) or 'none'})"
                )
            loaders = sorted(name for name in env if name.upper() in LOADER_VARIABLES)
            if loaders:
                return (
                    f"env may not set {', '.join(loaders)} (it changes what the command loads; "
                    f"policy {self.source})"
                )
            return None
        return self.refuse_url(url or "", self.allowed_urls, "mcp.allowedUrls")

    def refuse_response_url(self, url: str) -> str | None:
        """Why a Task's answer may not be POSTed to `url` (None: it may)."""
        return self.refuse_url(url, self.response_urls, "responseUrls")

    def refuse_url(self, url: str, allowed: Sequence[str], field_name: str) -> str | None:
        """Why `url` is refused by the list `allowed` (named `field_name`), or None."""
        matching = [pattern for pattern in allowed if _url_matches(url, pattern)]
        if not matching:
            return (
                f"URL {url} is not allowed by the policy {self.source} "
                f"({field_name}: {', '.join(allowed) or 'none'})"
            )
        host = (urlsplit(url).hostname or "").lower()
        if any((urlsplit(pattern).hostname or "").lower() == host for pattern in matching):
            return None  # the operator named this host: even a metadata address is theirs to allow
        internal = self._internal(host)
        if internal:
            return (
                f"URL {url} points at {internal}, refused unless the policy {self.source} names "
                f"{host} itself in {field_name}"
            )
        return None

    def _internal(self, host: str) -> str | None:
        """A description of `host` if it is a link-local or metadata address, else None."""
        if host in _METADATA_HOSTS:
            return "a cloud metadata service"
        addresses: list[ipaddress.IPv4Address | ipaddress.IPv6Address] = []
        try:
            addresses.append(ipaddress.ip_address(host.strip("[]")))
        except ValueError:
            try:
                infos = self.resolve(host, None, proto=socket.IPPROTO_TCP)
            except (OSError, UnicodeError):
                return None  # unresolvable: the connection fails on its own
            for info in infos:
                try:
                    addresses.append(ipaddress.ip_address(str(info[4][0]).split("%")[0]))
                except ValueError:
                    continue
        for address in addresses:
            if address in _METADATA_ADDRESSES:
                return f"a cloud metadata address ({address})"
            if address.is_link_local:
                return f"a link-local address ({address})"
        return None


def _glob(text: str, pattern: str) -> bool:
    return fnmatch.fnmatchcase(text, pattern)


def _url_matches(url: str, pattern: str) -> bool:
    """Whether `url` matches `pattern` part by part: scheme and port equal, the host and the path
    each matched as a glob on its own (so `https://*.example.com/*` never matches
    `https://evil.test/.example.com/`). A URL carrying credentials matches nothing."""
    try:
        have, want = urlsplit(url), urlsplit(pattern)
        have_port = have.port or (443 if have.scheme == "https" else 80)
        want_port = want.port or (443 if want.scheme == "https" else 80)
    except ValueError:
        return False
    if have.scheme != want.scheme or have.username or have.password or have_port != want_port:
        return False
    if not fnmatch.fnmatchcase((have.hostname or "").lower(), (want.hostname or "").lower()):
        return False
    return not want.path or fnmatch.fnmatchcase(have.path or "/", want.path)


def load(path: Path | None) -> Policy | None:
    """Read `serve --policy FILE`; None without one. Every mistake is one line naming the field."""
    if path is None:
        return None
    where = f"--policy {path}"
    try:
        document = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise UserError(f"{where}: cannot read it ({exc.strerror})") from None
    except yaml.YAMLError as exc:
        raise UserError(f"{where}: not YAML: {' '.join(str(exc).split())}") from None
    if document is None:
        document = {}
    if not isinstance(document, dict):
        raise UserError(f"{where}: expected a mapping of mcp, responseUrls and signers")
    _known(document, set(_FIELDS), where, "")
    mcp = document.get("mcp") or {}
    if not isinstance(mcp, dict):
        raise UserError(f"{where}: mcp: expected a mapping of allowedCommands and allowedUrls")
    _known(mcp, _FIELDS["mcp"] or set(), where, "mcp.")
    signers = document.get("signers") or {}
    if not isinstance(signers, dict):
        raise UserError(f"{where}: signers: expected a mapping of allowedSignersFile and requireSignedMain")
    _known(signers, _SIGNER_FIELDS, where, "signers.")
    allowed_signers = _readable(signers, "allowedSignersFile", where, file=True)
    gpg_home = _readable(signers, "gpgHome", where, file=False)
    signing_key = _readable(signers, "signingKey", where, file=True)
    require = signers.get("requireSignedMain", False)
    if not isinstance(require, bool):
        raise UserError(f"{where}: signers.requireSignedMain: expected true or false, got {require!r}")
    if require and allowed_signers is None and gpg_home is None:
        raise UserError(
            f"{where}: signers.requireSignedMain: set signers.allowedSignersFile (ssh) or signers.gpgHome "
            "(gpg): nobody could sign"
        )
    policy = Policy(
        source=str(path),
        allowed_commands=_strings(mcp, "allowedCommands", where, "mcp."),
        allowed_urls=_urls(mcp, "allowedUrls", where, "mcp."),
        response_urls=_urls(document, "responseUrls", where, ""),
        allowed_signers_file=allowed_signers,
        gpg_home=gpg_home,
        require_signed_main=require,
        signing_key=signing_key,
    )
    return policy


def describe(policy: Policy | None) -> str:
    """The line `serve` logs once at start: what the policy allows, or that everything is allowed."""
    if policy is None:
        return (
            "no --policy: every MCP command and URL and every responseUrl is allowed "
            "(DESIGN §10, docs/security.md)"
        )
    signing = (
        "main must be signed by an allowed signer"
        if policy.require_signed_main
        else "approvers identified by signature"
        if policy.has_signers
        else "signatures not checked"
    )
    return (
        f"policy {policy.source}: {len(policy.allowed_commands)} command pattern(s), "
        f"{len(policy.allowed_urls)} MCP URL pattern(s), {len(policy.response_urls)} responseUrl pattern(s); "
        f"{signing}"
    )


def _known(mapping: dict[Any, Any], fields: set[str], where: str, prefix: str) -> None:
    for key in mapping:
        if key not in fields:
            raise UserError(
                f"{where}: {prefix}{key}: unknown field (expected one of {', '.join(sorted(fields))})"
            )


def _readable(mapping: dict[str, Any], key: str, where: str, *, file: bool) -> Path | None:
    """An absolute path from the signers section that exists and can be read, or None if unset."""
    value = mapping.get(key)
    if value is None:
        return None
    if not isinstance(value, str) or not value.strip():
        raise UserError(f"{where}: signers.{key}: expected a path, got {value!r}")
    path = Path(value).expanduser()
    what = "file" if file else "directory"
    if not (path.is_file() if file else path.is_dir()):
        raise UserError(f"{where}: signers.{key}: {value} is not a readable {what}")
    try:
        if file:
            path.read_bytes()
    except OSError as exc:
        raise UserError(f"{where}: signers.{key}: cannot read {value} ({exc.strerror})") from None
    return path.resolve()


def _strings(mapping: dict[str, Any], key: str, where: str, prefix: str) -> tuple[str, ...]:
    value = mapping.get(key)
    if value is None:
        return ()
    if not isinstance(value, list):
        raise UserError(f"{where}: {prefix}{key}: expected a list of strings")
    for index, item in enumerate(value):
        if not isinstance(item, str) or not item.strip():
            raise UserError(f"{where}: {prefix}{key}[{index}]: expected a non-empty string, got {item!r}")
    return tuple(value)


def _urls(mapping: dict[str, Any], key: str, where: str, prefix: str) -> tuple[str, ...]:
    patterns = _strings(mapping, key, where, prefix)
    for index, pattern in enumerate(patterns):
        if not pattern.startswith(("http://", "https://")):
            raise UserError(
                f"{where}: {prefix}{key}[{index}]: {pattern!r} must start with http:// or https://"
            )
    return patterns
