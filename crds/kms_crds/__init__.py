"""The custom resources of kube-mapserver: one pydantic model per resource, the single source of
the CRD schemas (`make crds`), the operator's view of a resource and the facade's request models."""

GROUP = "maps.kube-mapserver.io"
VERSION = "v1alpha1"
API_VERSION = f"{GROUP}/{VERSION}"
