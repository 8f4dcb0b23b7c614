"""YAML in and out of the store, always through libyaml's safe C loader and dumper.

Every status file the reconciler commits goes through `dump`, so its output is what people read in
`git log -p` and pull requests: keys in the order the object was built (apiVersion, kind, metadata,
spec, status, like `kubectl get -o yaml`), no line folding, and multi-line strings (prompts, tool
results, model answers) as literal blocks so a diff shows the lines that changed. `load` is the
matching reader for the store's own files; resource files written by people are parsed with line
numbers in `gitops_acp.resources`.
"""

from __future__ import annotations

from typing import Any

import yaml

from gitops_acp.errors import StoreError

__all__ = ["dump", "load"]


class _Dumper(yaml.CSafeDumper):
    """The safe C dumper, with literal blocks for multi-line strings."""


def _represent_str(dumper: _Dumper, value: str) -> yaml.ScalarNode:
    # libyaml falls back to a quoted scalar by itself when a literal block cannot hold the value
    # exactly (trailing spaces on a line, special characters), so this never changes what loads.
    style = "|" if "\n" in value else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


_Dumper.add_representer(str, _represent_str)


def dump(doc: dict[str, Any]) -> bytes:
    """Serialize `doc` as UTF-8 YAML: insertion order, no folding, literal blocks for multi-line text."""
    try:
        text: bytes = yaml.dump(
            doc,
            Dumper=_Dumper,
            sort_keys=False,
            allow_unicode=True,
            default_flow_style=False,
            # A negative width is "never fold" for libyaml: long one-line strings stay one line.
            width=-1,
            encoding="utf-8",
        )
    except yaml.YAMLError as exc:  # a value YAML cannot represent (an object, a set, ...)
        raise StoreError(f"cannot write as YAML: {exc}") from exc
    return text


def load(data: bytes) -> dict[str, Any]:
    """Parse one YAML document that must be a mapping."""
    try:
        doc = yaml.load(data, Loader=yaml.CSafeLoader)
    except yaml.YAMLError as exc:
        raise StoreError(f"invalid YAML: {exc}") from exc
    if not isinstance(doc, dict):
        raise StoreError(f"expected a YAML mapping, found {type(doc).__name__}")
    return doc
