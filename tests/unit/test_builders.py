"""Golden files of the child objects a MapService produces (review every change as YAML)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import yaml

from kms_crds.common import LabelSelector
from kms_crds.mapservice import MapServiceSpec
from kms_operator import builders
from kms_operator.kube import is_subset

GOLDEN = Path(__file__).resolve().parents[1] / "golden" / "children"
OWNER = builders.Owner("ocean", "maps", "0000-uid")

CASES = {
    "minimal": {},
    "full": {
        "title": "Ocean maps",
        "datasetSelector": {"matchLabels": {"collection": "ocean"}},
        "replicas": 3,
        "resources": {
            "requests": {"cpu": "250m", "memory": "256Mi"},
            "limits": {"cpu": "1500m", "memory": "1Gi"},
        },
        "data": {"persistentVolumeClaim": "map-data", "subPath": "ocean"},
        "ingress": {
            "className": "nginx",
            "host": "maps.example.org",
            "path": "/ocean",
            "tlsSecretName": "maps-tls",
        },
        "autoscaling": {"minReplicas": 2, "maxReplicas": 6, "targetCpuUtilization": 60},
        "podDisruptionBudget": {"maxUnavailable": 1},
        "mapserver": {"maxRequestsPerProcess": 500, "debugLevel": 1},
        "probes": {"readiness": {"periodSeconds": 5}},
    },
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_children_golden(case):
    spec = MapServiceSpec.model_validate(CASES[case])
    children = builders.build_children(OWNER, spec, "MAP\nEND\n", "CONFIG\nEND\n", "abc123")
    text = yaml.safe_dump({k: v for k, v in children.items() if v is not None}, sort_keys=True, width=120)
    path = GOLDEN / f"{case}.yaml"
    if os.environ.get("UPDATE_GOLDEN") == "1":
        path.write_text(text)
    assert path.read_text() == text, f"children changed; review and run UPDATE_GOLDEN=1 pytest {__file__}"


def test_every_container_runs_as_non_root_with_a_read_only_root():
    spec = MapServiceSpec.model_validate(CASES["full"])
    dep = builders.build_deployment(OWNER, spec, "cm", "h")
    pod = dep["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    for c in pod["containers"] + pod["initContainers"]:
        sc = c["securityContext"]
        assert sc["runAsNonRoot"] and sc["readOnlyRootFilesystem"] and not sc["allowPrivilegeEscalation"]
        assert sc["capabilities"] == {"drop": ["ALL"]}
    assert "replicas" not in dep["spec"], "with an HPA the replica count belongs to the HPA"


@pytest.mark.parametrize(("limit", "expected"), [(None, 4), ("500m", 1), ("1500m", 3), (2, 4), ("64", 16)])
def test_process_count_follows_cpu_limit(limit, expected):
    spec = MapServiceSpec.model_validate({"resources": {"limits": {"cpu": limit}}} if limit else {})
    assert builders.process_count(spec) == expected


def test_is_subset():
    assert is_subset({"a": 1, "b": [{"c": 2}]}, {"a": 1, "b": [{"c": 2, "d": 3}], "e": 4})
    assert not is_subset({"b": [{"c": 2}]}, {"b": [{"c": 2}, {"c": 3}]})
    assert not is_subset({"a": 1}, {})
    assert is_subset({"x": 1}, {"x": 1.0})
    assert not is_subset({"x": True}, {"x": 1})


def test_label_selector():
    sel = LabelSelector.model_validate(
        {
            "matchLabels": {"a": "1"},
            "matchExpressions": [{"key": "b", "operator": "In", "values": ["x", "y"]}],
        }
    )
    assert sel.matches({"a": "1", "b": "x"})
    assert not sel.matches({"a": "1", "b": "z"})
    assert not sel.matches({"a": "2", "b": "x"})
    assert LabelSelector().matches({})
    assert LabelSelector.model_validate(
        {"matchExpressions": [{"key": "k", "operator": "DoesNotExist"}]}
    ).matches({})


def test_large_mapfiles_are_stored_gzipped_and_read_back():
    small = builders.build_configmap(OWNER, "MAP\nEND\n", "CONFIG\nEND\n", "h1")
    assert small["data"]["service.map"] == "MAP\nEND\n" and "binaryData" not in small
    big_text = (
        "MAP\n"
        + "".join(f'  LAYER NAME "l{i}" TYPE RASTER STATUS ON END\n' * 1 for i in range(20000))
        + "END\n"
    )
    big = builders.build_configmap(OWNER, big_text, "CONFIG\nEND\n", "h2")
    assert "service.map" not in big["data"]
    size = sum(len(v) for v in big["binaryData"].values()) + sum(len(v) for v in big["data"].values())
    assert len(big_text) > 900_000 and size < 1_000_000, "a ConfigMap holds at most 1 MiB"
    assert builders.mapfile_from_configmap(big.get("data"), big.get("binaryData")) == big_text
    assert builders.mapfile_from_configmap(small.get("data"), small.get("binaryData")) == "MAP\nEND\n"
