"""gitops-acp: an Agent Control Plane whose database is a git repository."""

__version__ = "0.1.0"
