"""The resource schema and its YAML edge: what people commit, and how files become resources.

Pure (no git, no network): `meta` holds the vocabulary (kinds, phases, labels, paths), `models` the
pydantic models, `loader` turns file bytes into models with `file:line` errors. Every other layer
depends on this one; it depends on nothing but `gitops_acp.errors`.
"""
