"""MapJob reconciler: one Kubernetes Job per MapJob, its progress mirrored into the MapJob status
from Job watch events, the runner's result read from the pod's termination message."""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Mapping

from pydantic import ValidationError

from kms_crds import API_VERSION
from kms_crds.job_types import BY_NAME, Inputs, named_datasets
from kms_crds.mapjob import MapJobSpec

from .conditions import settle_status, status_conditions
from .job_inputs import CacheJobError, JobInputError, build_job_for
from .job_progress import describe, duration, read_progress, termination_result
from .kube import ApiError, event_ref, now_rfc3339
from .mapjob_builder import CACHE_VERSIONS_ANNOTATION, job_labels, job_name
from .metrics import JOB_PHASES
from .network_policies import build_job_policy
from .queues import Debouncer
from .state import State

log = logging.getLogger("kms_operator.jobs")
TERMINAL = {"Succeeded", "Failed", "Cancelled"}
STALLED_REASONS = {"Failed": "JobFailed", "Cancelled": "JobCancelled"}
JOB_FIELD_MANAGER = "kube-mapserver-jobs"


def _dns_name(text: str) -> str:
    return re.sub(r"[^a-z0-9-]+", "-", text.lower()).strip("-")[:253] or "dataset"


class MapJobs:
    """The MapJob reconciler (its own queue; the API client and snapshots are the shared State)."""

    def __init__(self, op: State):
        self.op = op
        self.queue = Debouncer(
            "mapjob reconcile",
            op.settings.debounce_seconds,
            lambda key: self.reconcile(*key),
            ready=op.synced,
        )

    async def reconcile(self, ns: str, name: str) -> None:
        op = self.op
        async with op.lock(("MapJob", ns, name)):
            body = await op.call(op.kube.get, API_VERSION, "MapJob", ns, name)
            if body is None or body["metadata"].get("deletionTimestamp"):
                return
            await self._reconcile(body)

    async def _reconcile(self, body: dict) -> None:
        op = self.op
        meta = body["metadata"]
        ns, name, gen = meta["namespace"], meta["name"], meta.get("generation")
        old = dict(body.get("status") or {})
        phase = old.get("phase")
        try:
            spec = MapJobSpec.model_validate(body["spec"])
        except ValidationError as e:
            await self._write(body, old, {"phase": "Failed", "message": f"invalid spec: {e}"[:1000]}, gen)
            return
        jname = job_name(name)
        if phase in TERMINAL:
            if spec.cancel and phase != "Cancelled" and old.get("observedGeneration") != gen:
                await self._write(
                    body,
                    old,
                    {"message": f"job already {phase}; it cannot be cancelled"},
                    gen,
                    event=("Warning", "CancelIgnored"),
                )
            else:  # a finished job runs no new spec: seen, unchanged (conditions of older versions updated)
                await self._write(body, old, {}, gen)
            return
        job = await op.call(op.kube.get, "batch/v1", "Job", ns, jname)
        if spec.cancel:
            await self._delete_job(ns, name)
            await self._write(
                body,
                old,
                {"phase": "Cancelled", "message": "cancelled (spec.cancel)", "completionTime": now_rfc3339()},
                gen,
            )
            return
        if job is None:
            if old.get("jobName"):
                await self._write(
                    body,
                    old,
                    {
                        "phase": "Failed",
                        "message": "the Job was deleted before it finished",
                        "completionTime": now_rfc3339(),
                    },
                    gen,
                )
                return
            try:
                job_body = build_job_for(op, ns, name, meta["uid"], spec)
            except (JobInputError, CacheJobError) as e:
                await self._write(
                    body, old, {"phase": "Failed", "message": str(e), "completionTime": now_rfc3339()}, gen
                )
                return
            policy = build_job_policy(name, ns, meta["uid"], job_labels(name, spec.type), spec)
            if policy is not None and op.settings.network_policies:
                await op.call(op.kube.apply, policy)  # before the Job: its pod never runs unconfined
            await op.call(op.kube.apply, job_body)
            await self._write(
                body, old, {"phase": "Queued", "jobName": jname, "message": "Job created", "attempts": 0}, gen
            )
            return
        js = job.get("status") or {}
        conds = {c["type"]: c for c in js.get("conditions") or [] if c.get("status") == "True"}
        attempts = js.get("active", 0) + js.get("succeeded", 0) + js.get("failed", 0)
        new: dict = {"jobName": jname, "attempts": attempts, "startTime": js.get("startTime")}
        if "Complete" in conds or "Failed" in conds:
            pods = await op.call(op.kube.list, "v1", "Pod", ns, f"job-name={jname}")
            result = termination_result(pods) or {}
            end = (
                js.get("completionTime") or conds.get("Failed", {}).get("lastTransitionTime") or now_rfc3339()
            )
            new.update(completionTime=end, duration=duration(js.get("startTime"), end))
            if "Complete" in conds:
                new["progress"] = 1.0
            if "Complete" in conds and not result.get("error"):
                new.update(phase="Succeeded", result=result, message=result.get("message") or "succeeded")
                try:
                    await self._apply_result(ns, spec, result)
                    if BY_NAME[spec.type].cache_volume:
                        await self._apply_cache_result(ns, name, spec, job, result, end)
                except JobInputError as e:
                    new.update(phase="Failed", message=f"result could not be applied: {e}")
            else:
                reason = (
                    result.get("error") or result.get("message") or conds.get("Failed", {}).get("message")
                )
                new.update(phase="Failed", result=result or None, message=(reason or "the job failed")[:1000])
        elif js.get("active"):
            new.update(phase="Running", message=f"running (attempt {attempts})")
            pods = await op.call(op.kube.list, "v1", "Pod", ns, f"job-name={jname}")
            progress = await op.call(read_progress, op.kube, ns, pods)
            if progress:
                new.update(progress=round(progress["progress"], 3), message=describe(progress))
        else:
            new.update(phase="Queued", message="waiting for a pod")
        await self._write(body, old, new, gen)

    async def _write(
        self, body: dict, old: dict, new: dict, gen, event: tuple[str, str] | None = None
    ) -> None:
        op = self.op
        status = {**new, "observedGeneration": gen}
        phase = status.get("phase", old.get("phase"))
        finished = phase in TERMINAL
        message = status.get("message", old.get("message")) or ""
        conds = status_conditions(
            gen,
            ready=(phase == "Succeeded") if finished else None,
            reason=phase or "Pending",
            message=message,
            reconciling=None if finished else (phase or "Pending"),
            # failed for good (the Job's retries are used up, or its input is wrong) or cancelled:
            # only a new MapJob runs it again
            stalled=(STALLED_REASONS[phase], message) if phase in STALLED_REASONS else None,
            settled=phase or "Pending",
        )
        status = {k: v for k, v in status.items() if v is not None or k in old}
        if not settle_status(old, status, conds):
            return
        meta = body["metadata"]
        await op.call(op.kube.patch_status, API_VERSION, "MapJob", meta["namespace"], meta["name"], status)
        ref = event_ref(body, "MapJob")
        if phase != old.get("phase"):
            JOB_PHASES.labels(type=body["spec"].get("type"), phase=phase).inc()
            level = "Warning" if phase == "Failed" else "Normal"
            await op.call(op.kube.event, ref, level, str(phase), status.get("message") or str(phase))
        elif event:
            await op.call(op.kube.event, ref, event[0], event[1], status.get("message", ""))

    async def _apply_result(self, ns: str, spec: MapJobSpec, result: dict) -> None:
        """Register the output dataset; write checksums/metadata into the datasets' status."""
        op = self.op
        info = BY_NAME[spec.type]
        out = spec.output.dataset if spec.output else None
        if out and info.writes_output and result.get("output"):
            labels = dict(out.labels or {})
            ds = {
                "apiVersion": API_VERSION,
                "kind": "MapDataset",
                "metadata": {"name": out.name, "namespace": ns, "labels": labels},
                "spec": {
                    "type": "raster",
                    "source": {"path": result["output"]},
                    "identifier": out.identifier or out.name,
                    "title": out.title or out.name,
                },
            }
            await op.call(op.kube.apply_as, ds, JOB_FIELD_MANAGER)
            if result.get("checksum"):
                await op.call(
                    op.kube.patch_status,
                    API_VERSION,
                    "MapDataset",
                    ns,
                    out.name,
                    {"checksum": result["checksum"]},
                )
        if info.writes_status:
            named = named_datasets(info, spec.params) or []  # checksums only of the datasets it names
            for dname, checksum in (result.get("checksums") or {}).items():
                if dname in named:
                    await op.call(
                        op.kube.patch_status, API_VERSION, "MapDataset", ns, dname, {"checksum": checksum}
                    )
            for dname, md in (result.get("metadata") or {}).items():
                if isinstance(md, dict) and not md.get("error"):
                    patch = {
                        k: md[k]
                        for k in ("checksum", "size", "extent", "wgs84Bbox", "bandCount", "geometryType")
                        if k in md
                    }
                    await op.call(op.kube.patch_status, API_VERSION, "MapDataset", ns, dname, patch)
        if info.inputs is Inputs.campaign and spec.params.create_missing:
            await self._create_variants(ns, result)

    async def _apply_cache_result(
        self, ns: str, name: str, spec: MapJobSpec, job: dict, result: dict, end: str
    ) -> None:
        """Seeding records what it seeded in each dataset's status; purging clears that record
        for the versions it removed."""
        op = self.op
        raw = (job["metadata"].get("annotations") or {}).get(CACHE_VERSIONS_ANNOTATION) or "{}"
        versions: dict = json.loads(raw)
        present = {d["name"]: d for d in op.datasets_in(ns) if not d["deleting"]}
        for dname, version in versions.items():
            d = present.get(dname)
            if d is None:
                continue
            if spec.type == "cache-seed":
                mine = (result.get("perTileset") or {}).get(dname) or {}
                seeded = {
                    "version": version,
                    "grid": spec.cache_seed.grid,
                    "minZoom": spec.cache_seed.min_zoom,
                    "maxZoom": spec.cache_seed.max_zoom,
                    "tiles": mine.get("tiles"),  # None when the job seeded too many datasets to list
                    "bytes": mine.get("bytes"),
                    "job": name,
                    "time": end,
                }
                await op.call(
                    op.kube.patch_status, API_VERSION, "MapDataset", ns, dname, {"tileCacheSeeded": seeded}
                )
            else:
                had = (d["status"].get("tileCacheSeeded") or {}).get("version")
                if had and had != version:  # its tiles were removed (version None removes all)
                    await op.call(
                        op.kube.patch_status, API_VERSION, "MapDataset", ns, dname, {"tileCacheSeeded": None}
                    )

    async def _create_variants(self, ns: str, result: dict) -> None:
        op = self.op
        for miss in result.get("missing") or []:
            if not miss.get("candidate"):
                continue
            scene, variant = miss["scene"], miss["missing"]
            sibling = next(
                (
                    d
                    for d in op.datasets_in(ns)
                    if (d["spec"].get("identifier") or "").lower().startswith(scene.lower())
                ),
                None,
            )
            if sibling is None:
                continue
            spec = {
                k: v
                for k, v in sibling["spec"].items()
                if k not in ("source", "identifier", "variant", "title")
            }
            spec.update(
                source={"path": miss["candidate"]},
                identifier=f"{scene}_{variant.lower()}",
                variant=variant,
                title=f"{sibling['spec'].get('title', scene)} ({variant})",
            )
            body = {
                "apiVersion": API_VERSION,
                "kind": "MapDataset",
                "metadata": {
                    "name": _dns_name(f"{scene}-{variant}"),
                    "namespace": ns,
                    "labels": sibling["labels"],
                },
                "spec": spec,
            }
            await op.call(op.kube.apply_as, body, JOB_FIELD_MANAGER)

    async def _delete_job(self, ns: str, name: str) -> None:
        op = self.op
        jname = job_name(name)
        await op.call(op.kube.delete, "batch/v1", "Job", ns, jname)
        for pod in await op.call(op.kube.list, "v1", "Pod", ns, f"job-name={jname}"):
            await op.call(op.kube.delete, "v1", "Pod", ns, pod["metadata"]["name"])

    async def release(self, body: Mapping) -> None:
        """Finalizer: the Job and its pods are gone before the MapJob is."""
        meta = body["metadata"]
        ns, name = meta["namespace"], meta["name"]
        await self._delete_job(ns, name)
        jname = job_name(name)
        left = await self.op.call(self.op.kube.list, "v1", "Pod", ns, f"job-name={jname}")
        if left or await self.op.call(self.op.kube.get, "batch/v1", "Job", ns, jname):
            raise ApiError(409, f"Job {jname} or its pods still present")
        self.op.locks.pop(("MapJob", ns, name), None)
