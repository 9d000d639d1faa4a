"""The job type registry (`kms_crds.job_types`) is the one list of MapJob types: every registered
type has a runner, is in the generated CRD, has its facade route (or deliberately none), and the
operator builds a Job for it whose parameters the runner accepts. A new type needs an example here."""

from __future__ import annotations

import json
import re

import pytest

from kms_api.jobs_service import create_job_spec
from kms_api.main import create_app
from kms_api.settings import Settings
from kms_crds.common import KModel
from kms_crds.generate import crd_for
from kms_crds.job_types import BY_NAME, JOB_TYPES, Inputs, JobTypeInfo, named_datasets
from kms_crds.kube import Kube
from kms_crds.mapjob import PARAM_FIELDS, JobType, MapJob, MapJobSpec
from kms_jobs import cli
from kms_operator.job_inputs import RESOLVERS, build_job_for
from kms_operator.mapjob_builder import CACHE_MOUNT, CACHE_VERSIONS_ANNOTATION, job_labels
from kms_operator.network_policies import build_job_policy
from kms_operator.settings import Settings as OperatorSettings

NAMES = [t.name for t in JOB_TYPES]
# one valid parameter block per registered type (wire form), run through every consumer below
EXAMPLES: dict[str, dict] = {
    "nc-to-geotiff": {"input": "nc/sst.nc", "variable": "temp", "output": "out/sst.tif"},
    "cog-convert": {"input": "raw/a.tif", "output": "cog/a.tif", "compression": "ZSTD"},
    "merge-terrain": {"inputs": ["t/1.tif", "t/2.tif"], "output": "t/merged.tif"},
    "rehash": {"datasets": ["dem"]},
    "repair-metadata": {"datasets": ["dem", "rgb"]},
    "hyspex-variants": {"campaign": "fjord-2024"},
    "inspect": {"dataset": "rgb"},
    "cache-seed": {"service": "ocean", "maxZoom": 2},
    "cache-purge": {"service": "ocean", "keepCurrent": True},
}
DATASETS = {"dem": "fjord/scene1_Z.tif", "rgb": "fjord/scene1_RGB.tif"}


def _snapshot(name: str, path: str) -> dict:
    variant = "Z" if name == "dem" else "RGB"
    return {
        "name": name,
        "generation": 1,
        "deleting": False,
        "labels": {"set": "fjord"},
        "spec": {
            "type": "raster",
            "source": {"path": path},
            "identifier": name,
            "title": name,
            "campaign": "fjord-2024",
            "variant": variant,
        },
        "status": {
            "wgs84Bbox": [5.0, 60.0, 6.0, 61.0],
            "conditions": [{"type": "Ready", "status": "True", "observedGeneration": 1}],
        },
    }


class FakeOp:
    """The snapshots and settings the operator's job builder reads (no API calls)."""

    settings = OperatorSettings(job_image="example.org/runner:1")

    def datasets_in(self, ns: str) -> list[dict]:
        return [_snapshot(n, p) for n, p in DATASETS.items()]

    def services_in(self, ns: str) -> list[dict]:
        spec = {
            "datasetSelector": {"matchLabels": {"set": "fjord"}},
            "tileCache": {"storage": {"persistentVolumeClaim": "ocean-tiles"}},
        }
        return [{"name": "ocean", "deleting": False, "labels": {}, "spec": spec}]


def _spec(name: str) -> MapJobSpec:
    info = BY_NAME[name]
    return MapJobSpec.model_validate(
        {"type": name, info.field: EXAMPLES[name], "data": {"persistentVolumeClaim": "maps"}}
    )


def test_registry_is_consistent() -> None:
    assert sorted(EXAMPLES) == sorted(NAMES), "every registered type needs an example here"
    assert len(set(NAMES)) == len(NAMES) and len({t.field for t in JOB_TYPES}) == len(NAMES)
    for t in JOB_TYPES:
        assert re.fullmatch(r"[a-z][a-z0-9]*(-[a-z0-9]+)*", t.name), t.name
        assert re.fullmatch(r"[a-z][A-Za-z0-9]*", t.field), t.field
        assert issubclass(t.params, KModel)
        assert t.description and "\n" not in t.description and len(t.description) <= 100
        assert all(f in t.params.model_fields for f in t.dataset_fields), t.name
        assert (t.inputs is Inputs.datasets) == bool(t.dataset_fields), t.name
        assert not (t.writes_output and "output" not in t.params.model_fields), t.name


@pytest.mark.parametrize("name", NAMES)
def test_every_type_has_a_runner(name: str) -> None:
    model, run = cli.JOBS[name]
    assert callable(run) and issubclass(model, KModel)
    assert (name in cli.CACHE_JOBS) == BY_NAME[name].cache_volume
    choices = next(a.choices for a in cli.parser()._actions if a.dest == "type")
    assert name in choices  # kube-mapserver-job <type>
    assert sorted(cli.JOBS) == sorted(NAMES)


def test_crd_lists_every_type() -> None:
    spec = crd_for(MapJob)["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]
    assert spec["properties"]["type"]["enum"] == NAMES
    assert [t.value for t in JobType] == NAMES
    assert {t.name: t.field for t in JOB_TYPES} == PARAM_FIELDS
    rules = [r["rule"] for r in spec["x-kubernetes-validations"]]
    for t in JOB_TYPES:
        assert t.field in spec["properties"], t.field
        assert f"has(self.{t.field}) == (self.type == '{t.name}')" in rules


@pytest.mark.parametrize("name", NAMES)
def test_spec_takes_exactly_its_block(name: str) -> None:
    spec = _spec(name)
    assert isinstance(spec.params, BY_NAME[name].params)
    other = next(t for t in JOB_TYPES if t.name != name)
    with pytest.raises(ValueError, match=f"type {other.name} needs spec.{other.field}"):
        MapJobSpec.model_validate(
            {"type": name, BY_NAME[name].field: EXAMPLES[name], other.field: EXAMPLES[other.name]}
        )


def test_facade_routes_follow_the_registry() -> None:
    paths = create_app(Settings(namespace="x"), kube=Kube(None)).openapi()["paths"]  # type: ignore[arg-type]
    for t in JOB_TYPES:
        assert (f"/jobs/{t.name}" in paths) == t.api_route, t.name
    query = next(p for p in paths["/jobs"]["get"]["parameters"] if p["name"] == "type")
    assert query["schema"]["anyOf"][0]["$ref"].endswith("/JobType")


@pytest.mark.parametrize("name", NAMES)
def test_facade_creates_every_type(name: str) -> None:
    spec = create_job_spec(
        Settings(namespace="x", data_pvc="maps"), name, EXAMPLES[name], {"backoffLimit": 1}
    )
    assert spec["type"] == name and spec[BY_NAME[name].field] and spec["backoffLimit"] == 1


@pytest.mark.parametrize("name", NAMES)
def test_operator_builds_a_job_the_runner_accepts(name: str) -> None:
    info, spec = BY_NAME[name], _spec(name)
    job = build_job_for(FakeOp(), "maps", f"j-{name}", "uid-1", spec)
    container = job["spec"]["template"]["spec"]["containers"][0]
    args = container["args"]
    assert args[0] == name and args[1] == "--params-json"
    model, _ = cli.JOBS[name]
    model.model_validate(json.loads(args[2]))  # the operator's params are the runner's
    mounts = {m["mountPath"] for m in container["volumeMounts"]}
    assert (CACHE_MOUNT in mounts) == info.cache_volume == ("--cache-root" in args)
    annotations = job["metadata"].get("annotations") or {}
    assert (CACHE_VERSIONS_ANNOTATION in annotations) == info.cache_volume
    if info.inputs is Inputs.datasets:
        assert json.loads(args[2]) == {"paths": {n: DATASETS[n] for n in named_datasets(info, spec.params)}}
    policy = build_job_policy(f"j-{name}", "maps", "uid-1", job_labels(f"j-{name}", name), spec)
    assert policy is not None and bool(policy["spec"].get("egress")) == info.mapserver_egress


def test_every_input_kind_has_a_resolver() -> None:
    assert set(RESOLVERS) | {Inputs.tile_cache} == set(Inputs)


def test_rehash_by_path_prefix_passes_the_prefix() -> None:
    spec = MapJobSpec.model_validate({"type": "rehash", "rehash": {"pathPrefix": "fjord"}})
    args = build_job_for(FakeOp(), "maps", "j", "uid-1", spec)["spec"]["template"]["spec"]["containers"][0]
    assert json.loads(args["args"][2]) == {"pathPrefix": "fjord"}


def test_block_attribute_from_field() -> None:
    """The attribute of a type's block on MapJobSpec is derived from its field."""
    t = JobTypeInfo("x-y", "xYZ", KModel, "X.", Inputs.files, "m:f")
    assert t.attr == "x_y_z" and not t.cache_volume
