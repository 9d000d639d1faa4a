"""kube-mapserver facade: the HTTP routes API clients know, backed by custom resources."""

__version__ = "0.1.0"
