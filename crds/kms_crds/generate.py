"""Generate CustomResourceDefinitions from the pydantic models (`make crds`).

pydantic's JSON Schema is turned into a Kubernetes *structural* schema: references inlined,
`X | None` collapsed to X, `str | int` to `x-kubernetes-int-or-string`, titles dropped, CEL rules
(`x-kubernetes-validations`) kept where the models declare them.

    python -m kms_crds.generate [--check] [--out crds/]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import yaml

from . import GROUP, VERSION
from .common import Resource
from .mapdataset import MapDataset
from .mapjob import MapJob
from .mapservice import MapService

RESOURCES: list[type[Resource]] = [MapDataset, MapService, MapJob]
OUT = Path(__file__).resolve().parent.parent

_KEEP = {
    "type",
    "description",
    "properties",
    "required",
    "items",
    "enum",
    "default",
    "minimum",
    "maximum",
    "minLength",
    "maxLength",
    "minItems",
    "maxItems",
    "pattern",
    "format",
    "additionalProperties",
    "nullable",
    "x-kubernetes-validations",
    "x-kubernetes-int-or-string",
    "x-kubernetes-preserve-unknown-fields",
    "x-kubernetes-list-type",
    "x-kubernetes-list-map-keys",
}


class _NoAliases(yaml.SafeDumper):
    """Shared sub-schemas are written out in full: a CRD reader should not meet YAML anchors."""

    def ignore_aliases(self, data: object) -> bool:
        return True


def structural(node: Any, defs: dict[str, Any]) -> Any:
    """Convert one pydantic JSON-schema node into a structural OpenAPI v3 node."""
    if not isinstance(node, dict):
        return node
    node = dict(node)
    if "$ref" in node:
        target = defs[node.pop("$ref").rsplit("/", 1)[-1]]
        node = {**target, **node}  # field-level description wins over the model docstring
    for key in ("anyOf", "oneOf"):
        if key in node:
            options = [o for o in node.pop(key) if o.get("type") != "null"]
            types = sorted(o.get("type", "") for o in options)
            if types == ["integer", "string"]:
                node["x-kubernetes-int-or-string"] = True
            elif len(options) == 1:
                node = {**structural(options[0], defs), **node}
            else:
                raise ValueError(f"cannot express a union of {options} in a structural schema")
    if node.get("default", 0) is None:
        node.pop("default")
    out: dict[str, Any] = {}
    for k, v in node.items():
        if k not in _KEEP:
            continue
        if k == "properties":
            out[k] = {name: structural(sub, defs) for name, sub in v.items()}
        elif k in ("items", "additionalProperties") and isinstance(v, dict):
            out[k] = structural(v, defs)
        elif k == "additionalProperties":
            continue  # `false` is not structural; unknown fields are pruned or rejected by the apiserver
        else:
            out[k] = v
    if "properties" in out or "additionalProperties" in out:
        out.setdefault("type", "object")
    if isinstance(out.get("description"), str):
        out["description"] = " ".join(out["description"].split())
    return out


def crd_for(model: type[Resource]) -> dict[str, Any]:
    meta = model.crd
    schema = model.model_json_schema(by_alias=True, mode="validation")
    defs = schema.get("$defs", {})
    props = schema["properties"]
    openapi = {
        "type": "object",
        "description": " ".join((model.__doc__ or "").split()),
        "properties": {
            "apiVersion": {"type": "string", "description": "APIVersion of this representation."},
            "kind": {"type": "string", "description": "Kind of this representation."},
            "metadata": {"type": "object"},
            "spec": structural(props["spec"], defs),
            "status": structural(props["status"], defs),
        },
        "required": ["spec"],
    }
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {
            "name": f"{meta.plural}.{GROUP}",
            "labels": {"app.kubernetes.io/part-of": "kube-mapserver"},
        },
        "spec": {
            "group": GROUP,
            "scope": "Namespaced",
            "names": {
                "kind": meta.kind,
                "listKind": f"{meta.kind}List",
                "plural": meta.plural,
                "singular": meta.singular,
                "shortNames": meta.short_names,
                "categories": meta.categories,
            },
            "versions": [
                {
                    "name": VERSION,
                    "served": True,
                    "storage": True,
                    "subresources": {"status": {}},
                    "additionalPrinterColumns": [c.wire() for c in meta.printer_columns],
                    "schema": {"openAPIV3Schema": openapi},
                }
            ],
        },
    }


def render(model: type[Resource]) -> str:
    header = "# Generated by `make crds` from the pydantic models in crds/kms_crds. Do not edit.\n"
    body = yaml.dump(crd_for(model), Dumper=_NoAliases, sort_keys=False, width=120, allow_unicode=True)
    return header + body


def filename(model: type[Resource]) -> str:
    return f"{GROUP}_{model.crd.plural}.yaml"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", type=Path, default=OUT)
    p.add_argument("--check", action="store_true", help="fail if the files on disk differ from the models")
    a = p.parse_args(argv)
    stale = []
    for model in RESOURCES:
        path = a.out / filename(model)
        text = render(model)
        if a.check:
            if not path.exists() or path.read_text() != text:
                stale.append(str(path))
        else:
            path.write_text(text)
            print(f"wrote {path}")
    if stale:
        print("CRDs out of date with the models (run `make crds`):\n  " + "\n  ".join(stale), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
