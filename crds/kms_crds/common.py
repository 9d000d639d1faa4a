"""Building blocks shared by the resource models."""

from __future__ import annotations

from typing import Annotated, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field
from pydantic.alias_generators import to_camel

# Printable text: no control characters (newlines would let a title break out of a mapfile line).
SAFE_TEXT = r"^[^\x00-\x1f\x7f]*$"
DNS_LABEL = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"


class KModel(BaseModel):
    """camelCase on the wire (Kubernetes style), snake_case in Python; unknown fields rejected."""

    model_config = ConfigDict(
        alias_generator=to_camel, populate_by_name=True, extra="forbid", use_enum_values=True
    )

    def wire(self) -> dict:
        """The object as the apiserver stores it (camelCase, without unset optional fields)."""
        return self.model_dump(by_alias=True, exclude_none=True, mode="json")


Quantity = Annotated[
    str | int,
    Field(description="A Kubernetes quantity, e.g. 500m, 2, 1Gi."),
]


class Resources(KModel):
    """Compute resources of a container (as in a Pod spec)."""

    requests: dict[str, Quantity] | None = Field(None, description="Minimum resources, e.g. {cpu: 100m}.")
    limits: dict[str, Quantity] | None = Field(None, description="Maximum resources, e.g. {memory: 512Mi}.")


class LabelSelectorRequirement(KModel):
    key: str = Field(description="The label key the selector applies to.")
    operator: Literal["In", "NotIn", "Exists", "DoesNotExist"] = Field(
        description="How key and values relate."
    )
    values: list[str] | None = Field(None, description="Values for In/NotIn; empty for Exists/DoesNotExist.")


class LabelSelector(KModel):
    """A Kubernetes label selector. An empty selector selects every object in the namespace."""

    match_labels: dict[str, str] | None = Field(None, description="Labels that must all match exactly.")
    match_expressions: list[LabelSelectorRequirement] | None = Field(
        None, description="Set-based requirements, all of which must hold."
    )

    def matches(self, labels: dict[str, str] | None) -> bool:
        labels = labels or {}
        for k, v in (self.match_labels or {}).items():
            if labels.get(k) != v:
                return False
        for req in self.match_expressions or []:
            present = req.key in labels
            value = labels.get(req.key)
            values = req.values or []
            ok = {
                "In": present and value in values,
                "NotIn": not present or value not in values,
                "Exists": present,
                "DoesNotExist": not present,
            }[req.operator]
            if not ok:
                return False
        return True


class IPBlock(KModel):
    """An address range (as in a NetworkPolicy peer)."""

    cidr: str = Field(max_length=64, description="A CIDR, e.g. 10.0.0.0/8.")
    except_: list[str] | None = Field(
        None, alias="except", max_length=32, description="CIDRs inside `cidr` to leave out."
    )


class NetworkPeer(KModel):
    """Who may connect (a NetworkPolicy peer): pods by label, namespaces by label, or addresses."""

    pod_selector: LabelSelector | None = Field(None, description="Pods (in namespaceSelector's namespaces).")
    namespace_selector: LabelSelector | None = Field(
        None, description="Namespaces (every namespace: an empty selector {})."
    )
    ip_block: IPBlock | None = Field(None, description="Addresses.")


class Condition(KModel):
    """A status condition in the Kubernetes shape."""

    type: str = Field(
        description="Ready, Progressing, Degraded, Reconciling (work in progress) or Stalled (a failure "
        "only a spec change can fix), as the kstatus conventions (Flux, Argo CD health checks) read them."
    )
    status: Literal["True", "False", "Unknown"] = Field(description="Whether the condition holds.")
    reason: str = Field(description="CamelCase reason for the last transition.")
    message: str = Field("", description="Human-readable detail.")
    last_transition_time: str | None = Field(None, description="When status last changed (RFC 3339).")
    observed_generation: int | None = Field(
        None, description="The .metadata.generation this was computed for."
    )


# A resource no operator has looked at yet reads as `status: {observedGeneration: 0}` (the apiserver
# applies the default whenever it reads the object), so kstatus (Flux, Argo-style checks) sees it
# InProgress rather than Current in the moment between `kubectl apply` and the first reconcile.
UNOBSERVED_STATUS = {"observedGeneration": 0}


def status_field():
    """The `status` field of a resource model, defaulted to UNOBSERVED_STATUS in the CRD."""
    return Field(None, json_schema_extra={"default": UNOBSERVED_STATUS})


class PrinterColumn(KModel):
    name: str
    type: str
    json_path: str
    description: str | None = None
    priority: int | None = None


class ResourceMeta(BaseModel):
    """How a resource model maps onto a CRD (class-level metadata, not part of the schema)."""

    kind: str
    plural: str
    singular: str
    short_names: list[str] = []
    categories: list[str] = ["kube-mapserver"]
    printer_columns: list[PrinterColumn] = []


class Resource(KModel):
    """Base of the top-level resource models: `spec` and `status` are defined by subclasses."""

    crd: ClassVar[ResourceMeta]
