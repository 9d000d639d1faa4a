"""A MapJob's inputs -> the Kubernetes Job that runs it: the runner's --params-json made from the
type's parameter block, by what the registry (`kms_crds.job_types`) says it names: files (passed
unchanged), MapDatasets (resolved to their files), a HySpex campaign (its datasets), or a
MapService's tile cache (its MapCache configuration; the cache volume mounted)."""

from __future__ import annotations

import json
from collections.abc import Callable

from kms_crds.job_types import BY_NAME, Inputs, named_datasets
from kms_crds.mapjob import MapJobSpec

from .cache_jobs import CacheJobError, resolve_cache_job
from .mapjob_builder import CACHE_VERSIONS_ANNOTATION, build_job


class JobInputError(Exception):
    """The MapJob refers to something that does not exist or cannot be processed."""


def _dataset(op, ns: str, name: str) -> dict:
    for d in op.datasets_in(ns):
        if d["name"] == name and not d["deleting"]:
            return d
    raise JobInputError(f"MapDataset {name!r} not found in namespace {ns}")


def _path_of(d: dict) -> str:
    path = (d["spec"].get("source") or {}).get("path")
    if not path:
        raise JobInputError(f"MapDataset {d['name']!r} has no source.path (URL sources cannot be processed)")
    return path


def _files(op, ns: str, spec: MapJobSpec) -> dict:
    return spec.params.wire()


def _datasets(op, ns: str, spec: MapJobSpec) -> dict:
    names = named_datasets(BY_NAME[spec.type], spec.params)
    if names is None:  # it names files instead (rehash by pathPrefix)
        return spec.params.wire()
    return {"paths": {n: _path_of(_dataset(op, ns, n)) for n in names}}


def _campaign(op, ns: str, spec: MapJobSpec) -> dict:
    campaign = spec.params.campaign
    members = [
        {
            "name": d["name"],
            "identifier": d["spec"].get("identifier"),
            "variant": d["spec"].get("variant"),
            "path": (d["spec"].get("source") or {}).get("path"),
        }
        for d in sorted(op.datasets_in(ns), key=lambda d: d["name"])
        if d["spec"].get("campaign") == campaign and not d["deleting"]
    ]
    if not members:
        raise JobInputError(f"no MapDataset belongs to campaign {campaign!r}")
    return {"campaign": campaign, "datasets": members}


RESOLVERS: dict[Inputs, Callable[..., dict]] = {
    Inputs.files: _files,
    Inputs.datasets: _datasets,
    Inputs.campaign: _campaign,
}


def resolve_params(op, ns: str, spec: MapJobSpec) -> dict:
    """The runner's --params-json of a job on the data volume (not a tile-cache job)."""
    return RESOLVERS[BY_NAME[spec.type].inputs](op, ns, spec)


def build_job_for(op, ns: str, name: str, uid: str, spec: MapJobSpec) -> dict:
    """The Job running this MapJob (JobInputError or CacheJobError when its inputs are wrong)."""
    image = op.settings.job_image
    if BY_NAME[spec.type].inputs is Inputs.tile_cache:
        source = op.settings.tiles_source_template.format(name=spec.params.service, namespace=ns)
        cj = resolve_cache_job(op, ns, spec, source)
        versions = json.dumps(cj.versions, sort_keys=True)
        return build_job(
            name,
            ns,
            uid,
            spec,
            cj.params,
            cache_claim=cj.claim,
            annotations={CACHE_VERSIONS_ANNOTATION: versions},
            default_image=image,
        )
    return build_job(name, ns, uid, spec, resolve_params(op, ns, spec), default_image=image)


__all__ = ["CacheJobError", "JobInputError", "build_job_for", "resolve_params"]
