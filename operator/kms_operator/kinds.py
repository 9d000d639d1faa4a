"""Every Kubernetes kind the operator touches, declared once: the API client's paths, the child
kinds a MapService owns (applied, pruned, released), the optional ones (deleted when the spec no
longer asks for them) and the drift watches all come from this table."""

from __future__ import annotations

from dataclasses import dataclass

from kms_crds import GROUP, VERSION

CRD_API_VERSION = f"{GROUP}/{VERSION}"


@dataclass(frozen=True)
class Kind:
    api_version: str
    kind: str
    plural: str
    # a MapService child: "required" (always there), "optional" (there when the spec asks for it),
    # or "" (not a child: read, or written for other reasons)
    child: str = ""

    @property
    def key(self) -> tuple[str, str]:
        return self.api_version, self.kind

    @property
    def resource(self) -> tuple[str, ...]:
        """(group, version, plural) as Kopf takes it; ("v1", plural) for the core group."""
        return (*self.api_version.split("/"), self.plural)


KINDS = (
    Kind("v1", "ConfigMap", "configmaps", child="required"),
    Kind("apps/v1", "Deployment", "deployments", child="required"),
    Kind("v1", "Service", "services", child="required"),
    Kind("networking.k8s.io/v1", "Ingress", "ingresses", child="optional"),
    Kind("autoscaling/v2", "HorizontalPodAutoscaler", "horizontalpodautoscalers", child="optional"),
    Kind("policy/v1", "PodDisruptionBudget", "poddisruptionbudgets", child="optional"),
    Kind("networking.k8s.io/v1", "NetworkPolicy", "networkpolicies", child="optional"),
    Kind("v1", "Event", "events"),
    Kind("apps/v1", "ReplicaSet", "replicasets"),
    Kind("batch/v1", "Job", "jobs"),
    Kind("v1", "Pod", "pods"),
    Kind(CRD_API_VERSION, "MapDataset", "mapdatasets"),
    Kind(CRD_API_VERSION, "MapService", "mapservices"),
    Kind(CRD_API_VERSION, "MapJob", "mapjobs"),
)

PLURALS: dict[tuple[str, str], str] = {k.key: k.plural for k in KINDS}
# (apiVersion, kind) of every MapService child, and of those that exist or not depending on the spec
SERVICE_CHILDREN: tuple[tuple[str, str], ...] = tuple(k.key for k in KINDS if k.child)
OPTIONAL_KINDS: tuple[tuple[str, str], ...] = tuple(k.key for k in KINDS if k.child == "optional")
# the MapService children whose changes (drift, deletion, rollout status) bring their service back
CHILD_RESOURCES: tuple[tuple[str, ...], ...] = tuple(k.resource for k in KINDS if k.child)

CONFIG_MAP = ("v1", "ConfigMap")
DEPLOYMENT = ("apps/v1", "Deployment")
SERVICE = ("v1", "Service")
NETWORK_POLICY = ("networking.k8s.io/v1", "NetworkPolicy")
REPLICA_SET = ("apps/v1", "ReplicaSet")
POD = ("v1", "Pod")
