"""Level-based reconcilers: read the whole desired state, apply it, write status. Every trigger
(create, update, resume, child drift, dataset change) ends in one of these functions."""

from __future__ import annotations

import asyncio
import contextvars
import functools
import json
import logging
import time
import zlib
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import NamedTuple

from pydantic import ValidationError

from kms_crds import API_VERSION
from kms_crds.common import LabelSelector
from kms_crds.mapdataset import MapDatasetSpec, MapDatasetStatus
from kms_crds.mapservice import MapServiceSpec

from . import builders, rollout, tilecache
from .conditions import Problem, get_condition, merge_conditions, status_changed, status_conditions
from .inspect_source import InspectError, inspect_source
from .kube import ApiError, Kube
from .mapfile import DatasetInput, LayerRef, build_config, build_mapfile, epsg, layer_name, mapfile_hash
from .metrics import (
    DATASET_PASSES,
    MAPFILE_BUILDS,
    MAPFILE_RENDERS,
    QUEUED,
    RECONCILE_SECONDS,
    RECONCILES,
    SERVICE_PASSES,
)
from .settings import Settings

log = logging.getLogger("kms_operator")
Key = tuple[str, str]  # (namespace, name)
RENDER_STATUS_FIELDS = (
    "extent",
    "wgs84Bbox",
    "geometryType",
    "bandCount",
    "valueRange",
    "layerName",
    "sourceLayer",
)
PENDING_GRACE = 20.0  # seconds a service waits for selected datasets still being inspected
ROLLOUT_POLL = 5.0  # seconds between looks at a MapServer rollout in progress (for a failing mapfile check)
# GDAL/PROJ keep per-thread state (PROJ contexts, proj.db caches): one thread does all GDAL work.
GDAL_EXECUTOR = ThreadPoolExecutor(max_workers=1, thread_name_prefix="gdal")
# API calls of service reconciles get their own threads: during a bulk apply thousands of dataset
# status patches and Events wait for the default executor, and a service selecting them all would
# otherwise wait behind every one of them before it can roll out its new mapfile.
SERVICE_EXECUTOR = ThreadPoolExecutor(max_workers=4, thread_name_prefix="service-api")
_SERVICE_LANE: contextvars.ContextVar[bool] = contextvars.ContextVar("kms_service_lane", default=False)


class DatasetSnapshot(dict):
    """A MapDataset as the operator keeps it in memory (the index value), compact: spec and status
    are held as JSON bytes and decoded (a fresh copy) when read as snapshot["spec"] / ["status"].
    Ten thousand datasets as nested dicts are ~150 objects each, allocated one by one between the
    transient objects of a burst: they cost ~20 KB a dataset and keep the allocator from giving
    memory back. What the hot paths need (readiness, the render key part) is kept decoded."""

    __slots__ = ()

    def __missing__(self, key: str):
        if key == "spec" or key == "status":
            return json.loads(dict.__getitem__(self, "_" + key))
        raise KeyError(key)


def _compact(value: Mapping | None) -> bytes:
    return json.dumps(value or {}, separators=(",", ":"), ensure_ascii=False).encode()


def dataset_snapshot(body: Mapping) -> dict:
    """What the operator keeps in memory about a MapDataset (the index value). A new snapshot is
    made on every change of the object."""
    meta = body.get("metadata", {})
    status = body.get("status") or {}
    ready = get_condition(status, "Ready") or {}
    snap = DatasetSnapshot(
        name=meta.get("name"),
        uid=meta.get("uid"),
        rv=meta.get("resourceVersion"),
        generation=meta.get("generation"),
        labels=dict(meta.get("labels") or {}),
        deleting=bool(meta.get("deletionTimestamp")),
        _spec=_compact(body.get("spec")),
        _status=_compact(status),
        # the Ready condition: (status, reason, observedGeneration), or None without one
        _ready=(ready.get("status"), ready.get("reason"), ready.get("observedGeneration")) if ready else None,
    )
    spec = body.get("spec") or {}
    identifier = spec.get("identifier") or ""
    # what selection, layer order and map extent need, without parsing the spec (see LayerRef)
    snap["_layer"] = (
        identifier,
        layer_name(identifier),
        spec.get("title"),
        epsg(spec.get("projection")) or epsg((status.get("extent") or {}).get("crs")),
        status.get("wgs84Bbox"),
    )
    snap["_render"] = (
        snap["name"],
        snap["generation"],
        ready.get("status"),
        ready.get("reason"),
        ready.get("observedGeneration"),
        json.dumps([status.get(k) for k in RENDER_STATUS_FIELDS], sort_keys=True),
    )
    return snap


class _SlimSpec(NamedTuple):
    identifier: str
    title: str | None


class _SlimStatus(NamedTuple):
    wgs84_bbox: list[float] | None


class _SlimInput(NamedTuple):
    """What the status and the tile cache need of a served dataset (name, identifier, title, bbox)."""

    name: str
    spec: _SlimSpec
    status: _SlimStatus


def service_snapshot(body: Mapping) -> dict:
    meta = body.get("metadata", {})
    return {
        "name": meta.get("name"),
        "uid": meta.get("uid"),
        "deleting": bool(meta.get("deletionTimestamp")),
        "generation": meta.get("generation"),
        "spec": dict(body.get("spec") or {}),
        # only ever tested for membership: a set (a 10,000-name list scanned per dataset event is slow)
        "datasets": frozenset((body.get("status") or {}).get("datasets") or []),
    }


def is_ready(snapshot: dict) -> bool:
    if "_ready" in snapshot:
        ready = snapshot["_ready"]
        return bool(ready and ready[0] == "True" and ready[2] == snapshot["generation"])
    ready = get_condition(snapshot["status"], "Ready")
    return bool(
        ready and ready.get("status") == "True" and ready.get("observedGeneration") == snapshot["generation"]
    )


def selector_of(service: dict) -> LabelSelector:
    """The service's parsed dataset selector (parsed once per service snapshot)."""
    sel = service.get("_selector")
    if sel is None:
        sel = LabelSelector.model_validate(service["spec"].get("datasetSelector") or {})
        service["_selector"] = sel
    return sel


def service_spec_of(service: dict) -> MapServiceSpec:
    """The service's parsed spec (parsed once per service snapshot)."""
    spec = service.get("_model")
    if spec is None:
        spec = service["_model"] = MapServiceSpec.model_validate(service["spec"])
    return spec


def render_part(d: dict) -> tuple:
    """What the mapfile depends on of one dataset snapshot: its generation, readiness and
    inspected shape (not servedBy, url or timestamps). Computed when the snapshot is made."""
    return d["_render"]


def _pending(d: dict) -> bool:
    """Selected but not inspected (for its generation) yet."""
    ready = d["_ready"]
    return not ready or ready[2] != d["generation"]


def parsed_dataset(d: dict) -> tuple[MapDatasetSpec, MapDatasetStatus] | None:
    """The snapshot's spec and status as models (None when invalid)."""
    try:
        return MapDatasetSpec.model_validate(d["spec"]), MapDatasetStatus.model_validate(d["status"])
    except ValidationError:
        return None


def _load(d: dict) -> DatasetInput | None:
    parsed = parsed_dataset(d)
    if parsed is None:  # Ready means valid for this generation; only a stricter new model gets here
        log.warning("dataset %s no longer matches the schema: left out of the mapfile", d["name"])
        return None
    return DatasetInput(d["name"], *parsed)


def layer_ref(d: dict) -> LayerRef:
    """A selected dataset for the mapfile build; parsed only when its LAYER is written."""
    _, layer, _, native_crs, bbox = d["_layer"]
    return LayerRef(d["name"], layer, native_crs, bbox, functools.partial(_load, d))


def slim_input(d: dict) -> _SlimInput:
    identifier, _, title, _, bbox = d["_layer"]
    return _SlimInput(d["name"], _SlimSpec(identifier, title), _SlimStatus(bbox))


def services_context(services: Iterable[dict]) -> tuple:
    """Identity of the services of a namespace as far as a dataset's servedBy, url and tile
    cache depend on them."""
    return tuple(sorted((s["name"], s["uid"], s.get("generation"), s["deleting"]) for s in services))


class Debouncer:
    """Coalesce bursts of requests per key into one run; rerun when asked again meanwhile;
    retry failures with capped exponential backoff."""

    def __init__(
        self,
        name: str,
        delay: float,
        run: Callable[[Key], Awaitable[float | None]],
        retries: int = 8,
        pace: float = 0.0,
    ):
        self.name, self.delay, self.run, self.retries = name, delay, run, retries
        # A run may return the CPU seconds it spent on the event loop (not the time it waited for
        # the API); the next run of that key then waits at least pace times that. A key asked for
        # continuously (a service selecting thousands of datasets, during a bulk apply) then takes
        # at most 1 / (1 + pace) of the event loop instead of all of it.
        self.pace = pace
        self.tasks: dict[Key, asyncio.Task] = {}
        self.dirty: set[Key] = set()

    def request(self, key: Key) -> None:
        self.dirty.add(key)
        if key not in self.tasks:
            self.tasks[key] = asyncio.get_running_loop().create_task(self._loop(key))
            QUEUED.labels(queue=self.name, namespace=key[0]).inc()

    async def _loop(self, key: Key) -> None:
        try:
            failures, cost = 0, 0.0
            while key in self.dirty:
                await asyncio.sleep(max(self.delay, min(30.0, self.pace * cost)))
                self.dirty.discard(key)
                try:
                    cost = await self.run(key) or 0.0
                    failures = 0
                except Exception as e:
                    failures += 1
                    log.warning("%s %s/%s failed (%d/%d): %s", self.name, *key, failures, self.retries, e)
                    if failures >= self.retries:
                        break
                    self.dirty.add(key)
                    await asyncio.sleep(min(30.0, 0.5 * 2**failures))
        finally:
            self.tasks.pop(key, None)
            QUEUED.labels(queue=self.name, namespace=key[0]).dec()

    async def idle(self, timeout: float = 30) -> None:
        """Wait until no request is pending (tests, shutdown)."""
        deadline = time.monotonic() + timeout
        while self.tasks and time.monotonic() < deadline:
            await asyncio.sleep(0.05)


class BatchQueue:
    """Per-object requests coalesced into one batch per namespace: one task per namespace (not one
    per object), and the batch runner looks the namespace's objects up once per batch. Objects
    that failed are retried with capped exponential backoff."""

    def __init__(
        self,
        name: str,
        delay: float,
        run: Callable[[str, set[str]], Awaitable[dict[str, Exception]]],
        retries: int = 8,
    ):
        self.name, self.delay, self.run, self.retries = name, delay, run, retries
        self.tasks: dict[str, asyncio.Task] = {}
        self.pending: dict[str, set[str]] = {}
        self.failures: dict[Key, int] = {}

    def request(self, key: Key) -> None:
        ns, name = key
        self.pending.setdefault(ns, set()).add(name)
        if ns not in self.tasks:
            self.tasks[ns] = asyncio.get_running_loop().create_task(self._loop(ns))
            QUEUED.labels(queue=self.name, namespace=ns).inc()

    async def _loop(self, ns: str) -> None:
        try:
            while self.pending.get(ns):
                await asyncio.sleep(self.delay)
                names = self.pending.pop(ns, set())
                try:
                    failed = await self.run(ns, names)
                except Exception as e:  # the batch as a whole: retry all of it
                    failed = dict.fromkeys(names, e)
                for name in names - failed.keys():
                    self.failures.pop((ns, name), None)
                backoff = 0
                for name, e in failed.items():
                    n = self.failures[(ns, name)] = self.failures.get((ns, name), 0) + 1
                    log.warning("%s %s/%s failed (%d/%d): %s", self.name, ns, name, n, self.retries, e)
                    if n >= self.retries:
                        self.failures.pop((ns, name), None)
                        continue
                    self.pending.setdefault(ns, set()).add(name)
                    backoff = max(backoff, n)
                if backoff:
                    await asyncio.sleep(min(30.0, 0.5 * 2**backoff))
        finally:
            self.tasks.pop(ns, None)
            QUEUED.labels(queue=self.name, namespace=ns).dec()

    async def idle(self, timeout: float = 30) -> None:
        """Wait until no request is pending (tests, shutdown)."""
        deadline = time.monotonic() + timeout
        while self.tasks and time.monotonic() < deadline:
            await asyncio.sleep(0.05)


@dataclass
class Operator:
    """Shared state of the running operator: API access, settings, in-memory indexes, queues."""

    kube: Kube
    settings: Settings
    datasets: Mapping[str, Iterable[dict]] = field(default_factory=dict)  # kopf index: ns -> snapshots
    services: Mapping[str, Iterable[dict]] = field(default_factory=dict)  # kopf index: ns -> snapshots
    locks: dict[tuple, asyncio.Lock] = field(default_factory=dict)
    # uid -> (generation, "ok" | "error", result): the last inspection of each dataset, one entry each
    inspections: dict[str, tuple] = field(default_factory=dict)
    pending_since: dict[Key, float] = field(default_factory=dict)
    rendered: dict[Key, tuple] = field(default_factory=dict)  # last render per service, keyed by its inputs
    # per namespace: dataset name -> (resourceVersion, services context) when its servedBy, url and
    # tileCache were last found right: a service reconcile re-checks only datasets changed since
    served_checked: dict[str, dict[str, tuple]] = field(default_factory=dict)
    # CPU seconds the last reconcile of a service spent on the event loop (render key, selection,
    # mapfile, servedBy checks): paces its queue
    service_cost: dict[Key, float] = field(default_factory=dict)
    background: list[asyncio.Task] = field(default_factory=list)  # housekeeping tasks
    rollout_polls: dict[Key, asyncio.TimerHandle] = field(default_factory=dict)  # services rolling out

    def __post_init__(self) -> None:
        delay = self.settings.debounce_seconds
        self.service_queue = Debouncer("service reconcile", delay, self._service_from_queue, pace=2.0)
        self.served_queue = BatchQueue("dataset servedBy", delay, self._served_batch)
        from .mapjobs import MapJobs

        self.mapjobs = MapJobs(self)
        self.job_queue = Debouncer("mapjob reconcile", delay, lambda key: self.mapjobs.reconcile(*key))

    # ---------------------------------------------------------------- helpers

    def lock(self, key: tuple) -> asyncio.Lock:
        return self.locks.setdefault(key, asyncio.Lock())

    def datasets_in(self, namespace: str) -> list[dict]:
        return list(self.datasets.get(namespace, []))

    def services_in(self, namespace: str) -> list[dict]:
        return list(self.services.get(namespace, []))

    async def call(self, fn, *args, **kwargs):
        if _SERVICE_LANE.get():
            return await asyncio.get_running_loop().run_in_executor(
                SERVICE_EXECUTOR, functools.partial(fn, *args, **kwargs)
            )
        return await asyncio.to_thread(fn, *args, **kwargs)

    # ---------------------------------------------------------------- datasets

    async def reconcile_dataset(self, body: Mapping) -> None:
        """Validate and inspect the source; write Ready/Degraded, extent and servedBy; tell services."""
        t0 = time.monotonic()
        meta = body["metadata"]
        ns, name, gen = meta["namespace"], meta["name"], meta.get("generation")
        old = dict(body.get("status") or {})
        try:
            spec = MapDatasetSpec.model_validate(dict(body["spec"]))
        except ValidationError as e:
            spec, problem = None, ("InvalidSpec", str(e).replace("\n", " ")[:800])
        else:
            problem = None
        result = None
        if spec is not None:
            uid = meta["uid"]
            cached = self.inspections.get(uid)
            if cached is None or cached[0] != gen:
                try:
                    insp = await asyncio.get_running_loop().run_in_executor(
                        GDAL_EXECUTOR, inspect_source, spec, self.settings
                    )
                    cached = self.inspections[uid] = (gen, "ok", insp)
                except InspectError as e:
                    cached = self.inspections[uid] = (gen, "error", (e.reason, e.message))
            _, kind, value = cached
            if kind == "ok":
                result = value
            else:
                problem = value
        status: dict = {"observedGeneration": gen}
        if problem:  # (inspections are kept per generation: only a spec change retries)
            reason, message = problem
            conds = status_conditions(gen, ready=False, reason=reason, message=message, stalled=problem)
        else:
            status.update(
                MapDatasetStatus(
                    extent=result.extent,
                    wgs84_bbox=result.wgs84_bbox,
                    geometry_type=result.geometry_type,
                    source_layer=result.source_layer,
                    band_count=result.band_count,
                    value_range=result.value_range,
                    size=result.size,
                    layer_name=layer_name(spec.identifier),
                ).wire()
            )
            conds = status_conditions(
                gen, ready=True, reason="SourceValid", message="source found and readable"
            )
        status.update(
            self._served_status(
                ns, name, dict(meta.get("labels") or {}), not problem, body["spec"], {**old, **status}
            )
        )
        status["conditions"] = merge_conditions(old.get("conditions"), conds)
        if status_changed(old, status):
            await self.call(self.kube.patch_status, API_VERSION, "MapDataset", ns, name, status)
            was = get_condition(old, "Ready")
            if problem and (not was or was.get("reason") != problem[0]):
                await self.call(self.kube.event, _ref(body, "MapDataset"), "Warning", problem[0], problem[1])
            elif not problem and (not was or was.get("status") != "True"):
                await self.call(
                    self.kube.event,
                    _ref(body, "MapDataset"),
                    "Normal",
                    "SourceValid",
                    "source found and readable",
                )
        self.notify_services(ns, name, dict(meta.get("labels") or {}))
        RECONCILES.labels(kind="MapDataset", result="problem" if problem else "ok").inc()
        DATASET_PASSES.labels(namespace=ns).inc()
        RECONCILE_SECONDS.labels(kind="MapDataset").observe(time.monotonic() - t0)

    def _served_status(
        self,
        ns: str,
        name: str,
        dataset_labels: dict,
        ready: bool,
        spec: Mapping,
        status: Mapping,
        services: list[dict] | None = None,
    ) -> dict:
        services = self.services_in(ns) if services is None else services
        served = []
        if ready:
            served = sorted(
                s["name"] for s in services if not s["deleting"] and selector_of(s).matches(dataset_labels)
            )
        out: dict = {"servedBy": served, "url": None, "ogcapi": None, "tileCache": None}
        snaps = {s["name"]: s for s in services if s["name"] in served}
        for i, service in enumerate(served):
            svc = service_spec_of(snaps[service])
            if i == 0:
                out["url"] = builders.service_url(service, ns, svc, self.settings.service_url_template)
                out["url"] += "?SERVICE=WMS&REQUEST=GetCapabilities"
                out["ogcapi"] = builders.collection_url(
                    service, ns, svc, self.settings.service_url_template, spec
                )
            tc = svc.tile_cache
            if tc and tc.enabled:
                urls = tilecache.tile_urls(
                    self.settings.tiles_url_template.format(name=service, namespace=ns), tc
                )
                out["tileCache"] = {
                    "service": service,
                    "version": tilecache.dataset_version(spec, status),
                    "xyz": urls["xyz"].replace("{dataset}", name),
                    "wmts": urls["wmts"],
                    "wms": urls["wms"],
                }
                if i == 0 and tc.wms:  # WMS clients go through the cache
                    out["url"] = urls["wms"]
                break
        return out

    def _served_patch(self, ns: str, snap: dict, services: list[dict]) -> dict | None:
        """The status patch that sets the dataset's servedBy, url and tileCache right, if needed."""
        status = snap["status"]  # (decoded once: a snapshot decodes it on every read)
        want = self._served_status(
            ns, snap["name"], snap["labels"], is_ready(snap), snap["spec"], status, services
        )
        have = {k: status.get(k) for k in want}
        have["servedBy"] = have["servedBy"] or []
        return want if want != have else None

    async def _served_batch(self, ns: str, names: set[str]) -> dict[str, Exception]:
        """Check (and patch) servedBy, url and tileCache of these datasets; the failures by name."""
        wanted = {d["name"]: d for d in self.datasets_in(ns) if d["name"] in names}
        services = self.services_in(ns)
        patches = []
        for name in sorted(wanted):
            snap = wanted[name]
            if not snap["deleting"]:
                patch = self._served_patch(ns, snap, services)
                if patch is not None:
                    patches.append((name, patch))
        failed: dict[str, Exception] = {}
        limit = asyncio.Semaphore(8)

        async def one(name: str, patch: dict) -> None:
            async with limit:
                try:
                    await self.call(self.kube.patch_status, API_VERSION, "MapDataset", ns, name, patch)
                except Exception as e:
                    failed[name] = e

        await asyncio.gather(*(one(n, p) for n, p in patches))
        return failed

    def _check_served(self, ns: str, candidates: Iterable[dict]) -> None:
        """Queue a servedBy check for those datasets whose servedBy, url or tileCache is not what
        the services now make it. A dataset found right is not looked at again until it or the
        namespace's services change."""
        services = self.services_in(ns)
        ctx = services_context(services)
        checked = self.served_checked.setdefault(ns, {})
        for d in candidates:
            name = d["name"]
            if checked.get(name) == (d["rv"], ctx) or d["deleting"]:
                continue
            if self._served_patch(ns, d, services) is None:
                checked[name] = (d["rv"], ctx)
            else:
                checked.pop(name, None)
                self.served_queue.request((ns, name))
        if len(checked) > 1000 and len(checked) > 2 * len(self.datasets.get(ns, ())):  # deleted ones
            present = {d["name"] for d in self.datasets_in(ns)}
            self.served_checked[ns] = {k: v for k, v in checked.items() if k in present}

    def notify_services(self, ns: str, dataset: str, dataset_labels: dict) -> None:
        """Queue a re-render of the services that select this dataset now or served it before."""
        for s in self.services_in(ns):
            if dataset in s["datasets"] or selector_of(s).matches(dataset_labels):
                self.service_queue.request((ns, s["name"]))

    async def release_dataset(self, body: Mapping) -> None:
        """Finalizer: take the dataset out of every service that serves it, then let it go."""
        meta = body["metadata"]
        ns, name = meta["namespace"], meta["name"]
        for s in self.services_in(ns):
            if name in s["datasets"] or selector_of(s).matches(dict(meta.get("labels") or {})):
                await self.reconcile_service(ns, s["name"], exclude={name})
        self.inspections.pop(meta.get("uid"), None)

    # ---------------------------------------------------------------- services

    async def _service_from_queue(self, key: Key) -> float:
        await self.reconcile_service(*key)
        return self.service_cost.pop(key, 0.0)

    async def reconcile_service(self, ns: str, name: str, exclude: set[str] | None = None) -> None:
        lane = _SERVICE_LANE.set(True)
        try:
            await self._reconcile_service_locked(ns, name, exclude)
        finally:
            _SERVICE_LANE.reset(lane)

    async def _reconcile_service_locked(self, ns: str, name: str, exclude: set[str] | None) -> None:
        async with self.lock((ns, name)):
            t0 = time.monotonic()
            body = await self.call(self.kube.get, API_VERSION, "MapService", ns, name)
            if body is None or body["metadata"].get("deletionTimestamp"):
                return
            try:
                await self._reconcile_service(body, exclude or set())
                RECONCILES.labels(kind="MapService", result="ok").inc()
            except ApiError as e:
                RECONCILES.labels(kind="MapService", result="error").inc()
                if e.transient:
                    raise
                await self._report_failure(body, e)  # retrying cannot help: tell the user
            except Exception:
                RECONCILES.labels(kind="MapService", result="error").inc()
                raise
            finally:
                RECONCILE_SECONDS.labels(kind="MapService").observe(time.monotonic() - t0)

    def _render_key(self, ns: str, generation: int | None, spec: MapServiceSpec, exclude: set[str]) -> tuple:
        """Everything the mapfile depends on: the service generation and, per selected dataset,
        its generation, readiness and inspected shape (not servedBy, url or timestamps)."""
        matches = spec.dataset_selector.matches
        parts = [
            render_part(d)
            for d in self.datasets_in(ns)
            if not d["deleting"] and d["name"] not in exclude and matches(d["labels"])
        ]
        parts.sort()
        return generation, tuple(parts)

    def _select(
        self, ns: str, spec: MapServiceSpec, exclude: set[str]
    ) -> tuple[list[_SlimInput], list[LayerRef], list[str], list[str]]:
        """(included as slim inputs and as layer refs, excluded with reasons, pending: selected but
        not inspected yet). Nothing is parsed here: Ready means valid for the current generation."""
        included: list[_SlimInput] = []
        refs: list[LayerRef] = []
        excluded: list[str] = []
        pending: list[str] = []
        seen_layers: dict[str, str] = {}
        for d in sorted(self.datasets_in(ns), key=lambda d: d["name"]):
            if d["deleting"] or d["name"] in exclude or not spec.dataset_selector.matches(d["labels"]):
                continue
            if not is_ready(d):
                ready = d["_ready"]
                if _pending(d):
                    pending.append(d["name"])
                    continue
                excluded.append(f"{d['name']} ({ready[1] if ready else 'NotInspected'})")
                continue
            layer = d["_layer"][1]
            if layer in seen_layers:
                excluded.append(f"{d['name']} (DuplicateLayerName with {seen_layers[layer]})")
                continue
            seen_layers[layer] = d["name"]
            included.append(slim_input(d))
            refs.append(layer_ref(d))
        return included, refs, excluded, pending

    async def _reconcile_service(self, body: dict, exclude: set[str]) -> None:
        meta = body["metadata"]
        ns, name, gen = meta["namespace"], meta["name"], meta.get("generation")
        t0 = time.thread_time()  # the synchronous parts below are what a selection of 10,000 costs
        old_status = dict(body.get("status") or {})
        ref = _ref(body, "MapService")
        spec = MapServiceSpec.model_validate(body["spec"])
        owner = builders.Owner(name, ns, meta["uid"])
        ogcapi = builders.ogcapi_url(name, ns, spec, self.settings.service_url_template)

        # The datasets as this pass sees them: the mapfile and the tile cache's dataset versions
        # must come from the same snapshots (the index changes while the pass awaits the API; a tile
        # version of a newer snapshot could go live before MapServer serves that snapshot's mapfile).
        snaps = (
            {d["name"]: d for d in self.datasets_in(ns)}
            if spec.tile_cache and spec.tile_cache.enabled
            else {}
        )
        key = self._render_key(ns, meta.get("generation"), spec, exclude)
        cached = self.rendered.get((ns, name))
        if cached and cached[0] == key:  # nothing that shapes the mapfile changed: no rebuild
            _, datasets, excluded, pending, packed, refs = cached
            excluded = list(excluded)
            mapfile = zlib.decompress(packed).decode() if packed else ""
        else:
            matches = spec.dataset_selector.matches
            if (
                any(
                    _pending(d)
                    for d in self.datasets_in(ns)
                    if not d["deleting"] and d["name"] not in exclude and matches(d["labels"])
                )
                and time.monotonic() - self.pending_since.setdefault((ns, name), time.monotonic())
                < PENDING_GRACE
            ):
                # some still being inspected (the check below, without parsing every dataset)
                self.service_queue.request((ns, name))
                self.service_cost[(ns, name)] = time.thread_time() - t0
                return
            datasets, refs, excluded, pending = self._select(ns, spec, exclude)
            mapfile = build_mapfile(name, spec, refs, ogcapi_url=ogcapi) if not pending else ""
            if not pending:
                MAPFILE_BUILDS.labels(namespace=ns, service=name).inc()
            # kept: the render key, what the status and tile cache need of each dataset, the
            # mapfile compressed (10,000 layers are ~8 MB of text)
            self.rendered[(ns, name)] = (
                key,
                datasets,
                list(excluded),
                pending,
                zlib.compress(mapfile.encode(), 1) if mapfile else b"",
                [] if mapfile else refs,  # (the mapfile is built later, when pending ones are waited out)
            )
        if pending:
            # Datasets being inspected right now: wait for them (bounded) rather than roll out twice.
            first = self.pending_since.setdefault((ns, name), time.monotonic())
            if time.monotonic() - first < PENDING_GRACE:
                self.service_queue.request((ns, name))
                self.service_cost[(ns, name)] = time.thread_time() - t0
                return
            excluded += [f"{p} (NotInspected)" for p in pending]
        if not mapfile:  # pending datasets waited out: build without them
            mapfile = build_mapfile(name, spec, refs, ogcapi_url=ogcapi)
            MAPFILE_BUILDS.labels(namespace=ns, service=name).inc()
        self.pending_since.pop((ns, name), None)
        config = build_config(name, f"{builders.RUN_DIR}/{builders.MAPFILE}")
        digest = mapfile_hash(mapfile + config + builders.CHECK_SH + builders.PREPARE_SH)
        children = builders.build_children(
            owner,
            spec,
            mapfile,
            config,
            digest,
            self.settings.mapserver_image,
            self.settings.network_policies,
        )
        cost = time.thread_time() - t0

        live_deploy = await self.call(self.kube.get, "apps/v1", "Deployment", ns, name)
        created_cm, _ = await self.call(self.kube.apply, children["configmap"])
        if created_cm:
            MAPFILE_RENDERS.labels(namespace=ns, service=name).inc()
            await self.call(
                self.kube.event,
                ref,
                "Normal",
                "MapfileUpdated",
                f"mapfile {digest} with {len(datasets)} layers",
            )
        changed, deploy = await self.call(self.kube.apply, children["deployment"], live_deploy)
        if changed and live_deploy is not None:
            await self.call(
                self.kube.event, ref, "Normal", "DeploymentUpdated", "MapServer deployment updated"
            )
        await self.call(self.kube.apply, children["service"])
        for api_version, kind in builders.OPTIONAL_KINDS:
            desired = children[kind]
            if desired is not None:
                await self.call(self.kube.apply, desired)
            elif await self.call(self.kube.get, api_version, kind, ns, name) is not None:
                await self.call(self.kube.delete, api_version, kind, ns, name)
                await self.call(
                    self.kube.event, ref, "Normal", "Removed", f"{kind} removed (no longer in spec)"
                )
        await self._prune_configmaps(ns, name, keep=children["configmap"]["metadata"]["name"])

        # status
        dstatus = deploy.get("status") or {}
        want_replicas = (deploy.get("spec") or {}).get("replicas", spec.replicas)
        ready_replicas = dstatus.get("readyReplicas", 0)
        rolled = (
            dstatus.get("observedGeneration", 0) >= deploy["metadata"].get("generation", 0)
            and dstatus.get("updatedReplicas", 0) >= want_replicas
            and ready_replicas >= want_replicas
            and dstatus.get("replicas", 0) == want_replicas
        )
        serving = f"{ready_replicas}/{want_replicas} replicas ready, {len(datasets)} datasets served"
        stall = None if rolled else await self._rollout_stall(ns, name, digest, deploy)
        left_out = ("left out: " + ", ".join(excluded))[:1000] if excluded else ""
        conds = status_conditions(
            gen,
            ready=rolled,
            reason="Available" if rolled else (stall[0] if stall else "RolloutInProgress"),
            message=stall[1] if stall else serving,
            reconciling=None if rolled else "RollingOut",
            stalled=stall,
            degraded=("DatasetsExcluded", left_out) if excluded else None,
            settled="RolloutComplete",
        )
        if not rolled and not stall:
            self._poll_rollout(ns, name)  # (a failing mapfile check changes no Deployment status)
        status = {
            "observedGeneration": gen,
            "replicas": want_replicas,
            "readyReplicas": ready_replicas,
            "datasetCount": len(datasets),
            "datasets": [d.name for d in datasets],
            "excluded": excluded,
            "mapfileHash": digest,
            "configMap": children["configmap"]["metadata"]["name"],
            "url": builders.service_url(name, ns, spec, self.settings.service_url_template),
            "ogcapi": ogcapi,
            "tileCache": await self._reconcile_tile_cache(
                owner,
                spec,
                datasets,
                rolled,
                ref,
                had_cache=bool(old_status.get("tileCache")),
                snaps=snaps,
            ),
        }
        if spec.tile_cache and spec.tile_cache.enabled and spec.tile_cache.wms:
            status["url"] = status["tileCache"]["url"]
        status["conditions"] = merge_conditions(old_status.get("conditions"), conds)
        if status_changed(old_status, status):
            await self.call(self.kube.patch_status, API_VERSION, "MapService", ns, name, status)
            if excluded and excluded != old_status.get("excluded"):
                await self.call(self.kube.event, ref, "Warning", "DatasetsExcluded", left_out)
            if stall and not _same_problem(old_status, stall):
                await self.call(self.kube.event, ref, "Warning", *stall)
            was = get_condition(old_status, "Ready")
            if rolled and (not was or was.get("status") != "True"):
                await self.call(self.kube.event, ref, "Normal", "Ready", conds[0]["message"])
        # datasets whose servedBy changes because of this service
        t0 = time.thread_time()
        before = set(old_status.get("datasets") or [])
        matches = spec.dataset_selector.matches
        self._check_served(
            ns, (d for d in self.datasets_in(ns) if d["name"] in before or matches(d["labels"]))
        )
        self.service_cost[(ns, name)] = cost + time.thread_time() - t0
        SERVICE_PASSES.labels(namespace=ns, service=name).inc()  # (servedBy fixes are queued by now)

    async def _rollout_stall(self, ns: str, name: str, digest: str, deploy: dict) -> Problem | None:
        """Why the MapServer rollout of this mapfile cannot finish, if it cannot (rollout.py)."""
        selector = f"app.kubernetes.io/instance={name},app.kubernetes.io/component=mapserver"
        failed = rollout.failed_check(await self.call(self.kube.list, "v1", "Pod", ns, selector), digest)
        if failed:
            log_text = await self.call(rollout.check_log, self.kube, ns, failed[0])
            return rollout.load_failure(failed[0], failed[1], log_text)
        return rollout.deadline_exceeded(deploy)

    def _poll_rollout(self, ns: str, name: str) -> None:
        """Look at the service again in a while: a rollout in progress may stall without any event."""
        key = (ns, name)
        if key in self.rollout_polls:
            return

        def fire() -> None:
            self.rollout_polls.pop(key, None)
            self.service_queue.request(key)

        self.rollout_polls[key] = asyncio.get_running_loop().call_later(ROLLOUT_POLL, fire)

    async def _reconcile_tile_cache(
        self,
        owner: builders.Owner,
        spec: MapServiceSpec,
        datasets: Sequence[_SlimInput],
        rolled: bool,
        ref: dict,
        had_cache: bool,
        snaps: Mapping[str, dict],
    ) -> dict | None:
        """The MapCache children; a new configuration waits until MapServer serves the new mapfile
        (`rolled`: the MapServer Deployment with the new mapfile has every replica updated and
        ready and no old pod left, so no tile of the new version is rendered by an old pod); with a
        seed policy, new and changed datasets are then seeded by a MapJob. Outdated tiles are
        purged by a MapJob once no tile-cache pod serves the configuration that used them (an old
        pod still serving during the tile cache's own rollout would write them again)."""
        ns, name = owner.namespace, owner.name
        tc, tname = spec.tile_cache, tilecache.tiles_name(name)
        if (tc is None or not tc.enabled) and not had_cache:
            return None
        live = await self.call(self.kube.get, "apps/v1", "Deployment", ns, tname)
        if tc is None or not tc.enabled:
            if live is not None:
                await self.call(self.kube.delete, "apps/v1", "Deployment", ns, tname)
                await self.call(self.kube.delete, "v1", "Service", ns, tname)
                await self.call(self.kube.delete, "networking.k8s.io/v1", "NetworkPolicy", ns, tname)
                await self.call(self.kube.event, ref, "Normal", "Removed", "tile cache removed (not in spec)")
            await self._prune_configmaps(ns, name, keep="", component="tilecache-config")
            return None
        tilesets = [
            tilecache.Tileset(
                name=d.name,
                layer=layer_name(d.spec.identifier),
                version=tilecache.dataset_version(snaps[d.name]["spec"], snaps[d.name]["status"]),
                title=d.spec.title or d.name,
                wgs84_bbox=tuple(d.status.wgs84_bbox) if d.status.wgs84_bbox else None,
            )
            for d in datasets
            if d.name in snaps
        ]
        versions = {t.name: t.version for t in tilesets}
        source = self.settings.tiles_source_template.format(name=name, namespace=ns)
        xml = tilecache.build_mapcache_xml(name, tc, tilesets, source)
        digest = tilecache.config_digest(xml)
        cm = tilecache.build_tiles_configmap(owner, xml, versions, digest)
        live_cm = _config_map_of(live)
        cm_name = cm["metadata"]["name"]
        deploy = live
        if live is not None and live_cm != cm_name and not rolled:
            # MapServer is still rolling out the new mapfile: keep the cache on the old config; the
            # Deployment's status events bring the service back here once the rollout completes
            cm_name = live_cm
            held = True
        else:
            held = False
            before: dict = {}
            if live_cm and live_cm != cm_name:
                old_cm = await self.call(self.kube.get, "v1", "ConfigMap", ns, live_cm)
                old_cm = old_cm or {}
                before = json.loads(
                    tilecache.configmap_file(
                        old_cm.get("data"), old_cm.get("binaryData"), tilecache.VERSIONS_FILE
                    )
                    or "{}"
                )
            await self.call(self.kube.apply, cm)
            _, deploy = await self.call(
                self.kube.apply,
                tilecache.build_tiles_deployment(
                    owner, tc, cm_name, digest, self.settings.tiles_image, tilecache.config_path(cm)
                ),
                live,
            )
            await self.call(self.kube.apply, tilecache.build_tiles_service(owner))
            policy = (
                tilecache.build_tiles_network_policy(owner, spec) if self.settings.network_policies else None
            )
            if policy is not None:
                await self.call(self.kube.apply, policy)
            elif await self.call(self.kube.get, "networking.k8s.io/v1", "NetworkPolicy", ns, tname):
                await self.call(self.kube.delete, "networking.k8s.io/v1", "NetworkPolicy", ns, tname)
            if live_cm != cm_name:
                await self.call(
                    self.kube.event,
                    ref,
                    "Normal",
                    "TileCacheUpdated",
                    f"tile cache configuration {digest[:10]} with {len(tilesets)} tilesets",
                )
                await self._cache_jobs(owner, tc, before, versions, first=live is None)
        if not held:  # (a held-back config is not live: its versions are no reference for a purge)

            async def purge_retired(old_cm: dict) -> None:
                """No pod serves old_cm any more: purge its versions the current config dropped."""
                old = tilecache.configmap_file(
                    old_cm.get("data"), old_cm.get("binaryData"), tilecache.VERSIONS_FILE
                )
                await self._purge_jobs(owner, tc, json.loads(old or "{}"), versions)

            await self._prune_configmaps(
                ns, name, keep=cm_name or "", component="tilecache-config", retired=purge_retired
            )
        base = self.settings.tiles_url_template.format(name=name, namespace=ns)
        return {
            **tilecache.tile_urls(base, tc),
            "configMap": cm_name,
            "tilesets": len(tilesets),
            "readyReplicas": ((deploy or {}).get("status") or {}).get("readyReplicas", 0),
        }

    async def _purge_jobs(self, owner: builders.Owner, tc, before: dict, after: dict) -> None:
        """Purge the tiles of datasets changed or removed between two configurations (the older one
        retired: no pod serves it any more)."""
        if not tc.storage.persistent_volume_claim:  # pod-local caches went with their pods
            return
        changes = tilecache.diff_versions(before, after)
        stale = changes.changed + changes.removed
        for chunk in _chunks(stale, 1000):
            params = {"service": owner.name, "datasets": chunk, "keepCurrent": True}
            job = tilecache.auto_job_name(owner.name, "purge", [params, [after.get(d) for d in chunk]])
            await self.call(
                self.kube.apply,
                tilecache.build_auto_mapjob(owner, job, "cache-purge", params),
            )
        if stale:
            await self._prune_auto_jobs(owner)

    async def _cache_jobs(self, owner: builders.Owner, tc, before: dict, after: dict, first: bool) -> None:
        """Seed new and changed datasets (seed policy) when a new configuration goes live."""
        if not tc.storage.persistent_volume_claim:  # pod-local caches start empty with the new config
            return
        changes = tilecache.diff_versions(before, after)
        if tc.seed:
            fresh = sorted(changes.new + changes.changed)
            for chunk in _chunks(fresh, 1000):
                params = {
                    "service": owner.name,
                    "datasets": chunk,
                    "grid": str(tc.seed.grid),
                    "minZoom": tc.seed.min_zoom,
                    "maxZoom": tc.seed.max_zoom,
                    "threads": tc.seed.threads,
                }
                if tc.seed.extent:
                    params["extent"] = tc.seed.extent
                job = tilecache.auto_job_name(owner.name, "seed", [params, [after[d] for d in chunk]])
                await self.call(
                    self.kube.apply,
                    tilecache.build_auto_mapjob(owner, job, "cache-seed", params),
                )
        await self._prune_auto_jobs(owner)

    async def _prune_auto_jobs(self, owner: builders.Owner, keep: int = 10) -> None:
        """Automatic cache jobs do not pile up: finished ones beyond the newest `keep` are deleted."""
        selector = f"app.kubernetes.io/instance={owner.name},maps.kube-mapserver.io/automatic=true"
        jobs = await self.call(self.kube.list, API_VERSION, "MapJob", owner.namespace, selector)
        done = [
            j for j in jobs if (j.get("status") or {}).get("phase") in ("Succeeded", "Failed", "Cancelled")
        ]
        done.sort(key=lambda j: j["metadata"].get("creationTimestamp") or "", reverse=True)
        for j in done[keep:]:
            await self.call(self.kube.delete, API_VERSION, "MapJob", owner.namespace, j["metadata"]["name"])

    async def _report_failure(self, body: dict, error: ApiError) -> None:
        meta = body["metadata"]
        gen = meta.get("generation")
        old = dict(body.get("status") or {})
        message = str(error)[:1000]
        conds = status_conditions(
            gen, ready=False, reason="ApplyFailed", message=message, stalled=("ApplyFailed", message)
        )
        status = {"observedGeneration": gen, "conditions": merge_conditions(old.get("conditions"), conds)}
        if status_changed(old, status):
            await self.call(
                self.kube.patch_status, API_VERSION, "MapService", meta["namespace"], meta["name"], status
            )
            await self.call(self.kube.event, _ref(body, "MapService"), "Warning", "ApplyFailed", message)

    async def _prune_configmaps(
        self,
        ns: str,
        name: str,
        keep: str,
        component: str = "mapfile",
        retired: Callable[[dict], Awaitable[None]] | None = None,
    ) -> None:
        """Delete mapfile (or tile cache) ConfigMaps no pod can need any more: not the current one,
        and not one a ReplicaSet with pods still mounts (a stuck rollout keeps old pods serving).
        `retired(configmap)` runs first for each (a failure keeps the ConfigMap for the next pass)."""
        selector = f"app.kubernetes.io/instance={name},app.kubernetes.io/component={component}"
        selector += ",app.kubernetes.io/managed-by=kube-mapserver-operator"
        stale = {
            cm["metadata"]["name"]: cm
            for cm in await self.call(self.kube.list, "v1", "ConfigMap", ns, selector)
            if cm["metadata"]["name"] != keep
        }
        if not stale:
            return
        in_use = set()
        rs_selector = f"app.kubernetes.io/instance={name}"
        for rs in await self.call(self.kube.list, "apps/v1", "ReplicaSet", ns, rs_selector):
            if (rs.get("spec") or {}).get("replicas", 0) or (rs.get("status") or {}).get("replicas", 0):
                for v in rs["spec"]["template"]["spec"].get("volumes") or []:
                    if v.get("configMap"):
                        in_use.add(v["configMap"]["name"])
        for cm_name, cm in stale.items():
            if cm_name not in in_use:
                if retired is not None:
                    await retired(cm)
                await self.call(self.kube.delete, "v1", "ConfigMap", ns, cm_name)

    async def release_service(self, body: Mapping) -> None:
        """Finalizer: delete every child, check none is left, then let the MapService go."""
        meta = body["metadata"]
        ns, name = meta["namespace"], meta["name"]
        async with self.lock((ns, name)):
            selector = (
                f"app.kubernetes.io/instance={name},app.kubernetes.io/managed-by=kube-mapserver-operator"
            )
            kinds = [
                ("v1", "ConfigMap"),
                ("apps/v1", "Deployment"),
                ("v1", "Service"),
                *builders.OPTIONAL_KINDS,
            ]
            for api_version, kind in kinds:
                for child in await self.call(self.kube.list, api_version, kind, ns, selector):
                    await self.call(self.kube.delete, api_version, kind, ns, child["metadata"]["name"])
            for api_version, kind in kinds:
                left = await self.call(self.kube.list, api_version, kind, ns, selector)
                if any(not c["metadata"].get("deletionTimestamp") for c in left):
                    raise ApiError(409, f"{kind} children of {name} still present")
        self.forget_service(ns, name)
        for d in self.datasets_in(ns):
            if name in (d["status"].get("servedBy") or []):
                self.served_queue.request((ns, d["name"]))

    def forget_service(self, ns: str, name: str) -> None:
        """Drop what is kept in memory for a released service (its render cache holds the mapfile)."""
        for table in (self.rendered, self.pending_since, self.service_cost, self.locks):
            table.pop((ns, name), None)
        poll = self.rollout_polls.pop((ns, name), None)
        if poll is not None:
            poll.cancel()


def _config_map_of(deployment: dict | None) -> str | None:
    """The ConfigMap the Deployment's pods mount as `config` (the tile cache's configuration)."""
    if not deployment:
        return None
    for v in deployment["spec"]["template"]["spec"].get("volumes") or []:
        if v.get("name") == "config" and v.get("configMap"):
            return v["configMap"]["name"]
    return None


def _same_problem(status: Mapping, problem: Problem) -> bool:
    stalled = get_condition(status, "Stalled") or {}
    return stalled.get("status") == "True" and (stalled.get("reason"), stalled.get("message")) == problem


def _chunks(items: list[str], size: int) -> list[list[str]]:
    return [items[i : i + size] for i in range(0, len(items), size)]


def _ref(body: Mapping, kind: str) -> dict:
    meta = body["metadata"]
    return {
        "apiVersion": API_VERSION,
        "kind": kind,
        "metadata": {"name": meta["name"], "namespace": meta["namespace"], "uid": meta.get("uid")},
    }
