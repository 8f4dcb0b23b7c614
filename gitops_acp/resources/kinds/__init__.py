"""One module per kind: its spec, its status and the top-level resource class.

Import them through `gitops_acp.resources.models`, which names every schema type in one place.
"""
