"""How files of `main` are read as YAML, without the models: the loader's parser, and a light pass.

`loader.py` parses each file into nodes (for line numbers) and documents, then checks them against
the pydantic models. Readers that only need which objects a file declares (`get tasks`: the names
on `main`, store/readers.py) read the same documents with `load_manifests`, and parse with the
models only the files of what they show; importing pydantic and the models is ~150 ms of a
command, checking a Task file ~0.1 ms.
"""

from __future__ import annotations

import functools

from gitops_acp.resources.meta import API_GROUPS

TYPE_CHECKING = False  # not `typing`'s: a command reading one object does without it (tuples.py)
if TYPE_CHECKING:
    from typing import Any

    import yaml

__all__ = ["MARKERS", "in_our_group", "load_manifests", "manifest_loader", "name_of"]

#: Text in a file of ours: a file whose YAML broke without any is someone else's problem.
MARKERS = (b"humanlayer.dev", b"acp.gitops.dev")


@functools.cache
def manifest_loader() -> type[yaml.CSafeLoader]:
    """The C safe loader, with timestamps kept as text (as kubectl's JSON-based YAML does: a name
    like 2024-01-01 stays the text it is)."""
    import yaml

    class ManifestLoader(yaml.CSafeLoader):
        pass

    def timestamp_as_text(loader: ManifestLoader, node: yaml.Node) -> str:
        assert isinstance(node, yaml.ScalarNode)  # the resolver tags only scalars as timestamps
        return str(loader.construct_scalar(node))

    ManifestLoader.add_constructor("tag:yaml.org,2002:timestamp", timestamp_as_text)
    return ManifestLoader


def load_manifests(data: bytes) -> tuple[list[Any], bool]:
    """The documents of a file as `loader.load_file` constructs them, and whether its YAML broke
    (then the documents before the break); nothing checked against the models."""
    import yaml

    documents: list[Any] = []
    try:
        for document in yaml.load_all(data, Loader=manifest_loader()):
            documents.append(document)
    except yaml.YAMLError:
        return documents, True
    return documents, False


def in_our_group(doc: dict[Any, Any]) -> bool:
    """Whether a document's apiVersion belongs to one of our API groups (any version)."""
    api_version = doc.get("apiVersion")
    return isinstance(api_version, str) and api_version.split("/", 1)[0] in API_GROUPS


def name_of(doc: dict[Any, Any]) -> str | None:
    """A document's `metadata.name` when it is a non-empty string."""
    metadata = doc.get("metadata")
    name = metadata.get("name") if isinstance(metadata, dict) else None
    return name if isinstance(name, str) and name else None
