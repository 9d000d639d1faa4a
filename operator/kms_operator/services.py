"""MapService reconcile, in four steps: render (the mapfile from the selected datasets, cached by
what it depends on; waits a little for datasets still being inspected), build (the desired children,
pure: builders.py), apply (server-side apply, optional kinds deleted when not wanted, old ConfigMaps
pruned, the tile cache), status (service_status.py, pure) and the servedBy fields of the datasets."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Iterable, Mapping
from typing import NamedTuple

from kms_crds import API_VERSION
from kms_crds.configmap_files import MAPFILE, FileWriter, gzipped_lines
from kms_crds.mapservice import MapServiceSpec

from . import builders, rollout
from .children import delete_children, prune_configmaps
from .conditions import Problem, settle_status, status_conditions
from .kinds import CONFIG_MAP, DEPLOYMENT, OPTIONAL_KINDS, POD
from .kube import ApiError, event_ref
from .labels import RENDER_KEY_ANNOTATION
from .mapfile import build_config, build_mapfile
from .metrics import MAPFILE_BUILDS, MAPFILE_RENDERS, RECONCILE_SECONDS, RECONCILES, SERVICE_PASSES
from .network_policies import REMOTE
from .queues import Debouncer, Key
from .served import Served
from .service_status import rollout_of, service_events, service_status
from .snapshots import SlimInput, is_pending, render_digest, render_key, select, selected, service_spec_of
from .state import State, service_lane
from .tilecache_reconcile import TileCaches

log = logging.getLogger("kms_operator.services")
PENDING_GRACE = 20.0  # seconds a service waits for selected datasets still being inspected...
PENDING_MAX = 300.0  # ... after the last one inspected, and at most this long in all
PENDING_LOOK = 1.0  # seconds between its looks at them meanwhile
ROLLOUT_POLL = 5.0  # seconds between looks at a MapServer rollout in progress (for a failing mapfile check)


class Rendered(NamedTuple):
    """What a service's status and tile cache need of the selection, and the built children."""

    datasets: list[SlimInput]
    excluded: list[str]
    digest: str  # the mapfile's hash (names its ConfigMap)
    children: dict  # builders.build_children()


def live_mapfile(live_cm: dict | None, render_key: str) -> Iterable[str] | None:
    """The lines of a live mapfile ConfigMap's mapfile if it was made from `render_key` (read
    piece by piece when gzipped), else None."""
    annotations = ((live_cm or {}).get("metadata") or {}).get("annotations") or {}
    if not live_cm or annotations.get(RENDER_KEY_ANNOTATION) != render_key:
        return None
    lines = gzipped_lines(live_cm.get("binaryData"), MAPFILE)
    if lines is not None:
        return lines
    text = (live_cm.get("data") or {}).get(MAPFILE)
    return [text] if text is not None else None


class Services:
    """The MapService reconciler, with its own queue (paced by the CPU a pass costs)."""

    def __init__(self, state: State, served: Served, tile_caches: TileCaches):
        self.state, self.served, self.tile_caches = state, served, tile_caches
        self.queue = Debouncer(
            "service reconcile", state.settings.debounce_seconds, self._run, pace=2.0, ready=state.synced
        )
        self.rendered: dict[Key, tuple] = {}  # last render per service, keyed by its inputs
        self.pending_since: dict[Key, tuple[float, float, int]] = {}  # first, last progress, done
        # CPU seconds the last reconcile of a service spent on the event loop (render key, selection,
        # mapfile, servedBy checks): paces its queue
        self.service_cost: dict[Key, float] = {}
        self.rollout_polls: dict[Key, asyncio.TimerHandle] = {}  # services rolling out

    async def _run(self, key: Key) -> float:
        await self.reconcile(*key)
        return self.service_cost.pop(key, 0.0)

    async def reconcile(self, ns: str, name: str, exclude: set[str] | None = None) -> None:
        state = self.state
        if self._still_waiting(ns, name, exclude or set()):
            return
        with service_lane():
            async with state.lock((ns, name)):
                t0 = time.monotonic()
                body = await state.call(state.kube.get, API_VERSION, "MapService", ns, name)
                if body is None or body["metadata"].get("deletionTimestamp"):
                    return
                try:
                    await self._reconcile(body, exclude or set())
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

    def _still_waiting(self, ns: str, name: str, exclude: set[str]) -> bool:
        """Datasets it selects are being inspected (and the grace is not over): known from the
        snapshots, before reading the service (during a bulk apply its status lists thousands)."""
        snap = next((s for s in self.state.services_in(ns) if s["name"] == name), None)
        if snap is None or snap["deleting"] or self.rendered.get((ns, name), (None,))[0] is None:
            return False  # (a first pass always goes through: it reports what it sees)
        spec = service_spec_of(snap)
        t0 = time.thread_time()
        chosen = selected(self.state.datasets_in(ns), spec, exclude)
        pending = sum(map(is_pending, chosen))
        return pending > 0 and self._wait_for_pending((ns, name), t0, len(chosen) - pending)

    def _wait_for_pending(self, key: Key, t0: float, done: int) -> bool:
        """True (and the service queued again) while selected datasets may still be inspected:
        until PENDING_GRACE seconds pass without one more of them inspected (`done`: how many
        are), at most PENDING_MAX in all. A bulk apply of thousands is then rendered once, at
        its end, not every few seconds (a 10,000-layer build is seconds of CPU)."""
        now = time.monotonic()
        first, progress, before = self.pending_since.setdefault(key, (now, now, done))
        if done > before:
            progress = now
        self.pending_since[key] = (first, progress, done)
        if now - progress < PENDING_GRACE and now - first < PENDING_MAX:
            self.queue.request(key)
            # look again in a second at the earliest: during a bulk apply of thousands, every look
            # costs a render key over all of them, and the datasets' own reconciles need the CPU
            self.service_cost[key] = max(PENDING_LOOK / self.queue.pace, time.thread_time() - t0)
            return True
        return False

    def _render(
        self,
        owner: builders.Owner,
        spec: MapServiceSpec,
        gen: int | None,
        exclude: set[str],
        t0: float,
        live_cm: dict | None,
    ) -> Rendered | None:
        """The selection, the mapfile's hash and the children built from it (None: wait for
        datasets being inspected, the service is queued again). Nothing that shapes the mapfile
        changed since the last pass: nothing is built (the mapfile is not kept, its children are);
        nor since the live ConfigMap was written (its render-key annotation, after a restart)."""
        ns, name = owner.namespace, owner.name
        key = (ns, name)
        ogcapi = builders.ogcapi_url(name, ns, spec, self.state.settings.service_url_template)
        datasets = self.state.datasets_in(ns)
        rkey = render_key(datasets, gen, spec, exclude)
        rdigest = render_digest(rkey, ogcapi)
        cached = self.rendered.get(key)
        if cached and cached[0] == rkey:
            _, included, excluded, pending, refs, built = cached
            excluded = list(excluded)
        else:
            chosen = selected(datasets, spec, exclude)
            waiting = sum(map(is_pending, chosen))
            if waiting and self._wait_for_pending(key, t0, len(chosen) - waiting):
                return None
            included, refs, excluded, pending = select(datasets, spec, exclude)
            built = None
            if not pending:
                lines = live_mapfile(live_cm, rdigest)
                if live_cm is not None and lines is None:
                    log.info("%s/%s: the live mapfile was made from other inputs: building it", ns, name)
                built = self._build(owner, spec, rdigest, refs, ogcapi, lines)
            # kept: the render key, what the status and tile cache need of each dataset, and the
            # children (not the mapfile: 10,000 layers are ~18 MB of text; the ConfigMap holds it
            # gzipped); the refs only while the mapfile is still to be built
            self.rendered[key] = (rkey, included, list(excluded), pending, [] if built else refs, built)
        if pending:  # being inspected right now: wait for them (bounded) rather than roll out twice
            if self._wait_for_pending(key, t0, len(included) + len(excluded)):
                return None
            excluded += [f"{p} (NotInspected)" for p in pending]
        if built is None:  # pending datasets waited out: build without them
            built = self._build(owner, spec, rdigest, refs, ogcapi)
            self.rendered[key] = (*self.rendered[key][:4], [], built)
        self.pending_since.pop(key, None)
        return Rendered(included, excluded, *built)

    def _build(
        self,
        owner: builders.Owner,
        spec: MapServiceSpec,
        rdigest: str,
        refs: list,
        ogcapi: str | None,
        live_lines: Iterable[str] | None = None,
    ) -> tuple[str, dict]:
        """(the mapfile hash, the desired children): the mapfile is written (or the live one read
        again) line by line into the gzip stream its ConfigMap stores, never held whole."""
        settings = self.state.settings
        out = FileWriter(watch=(REMOTE,))
        if live_lines is not None:
            for line in live_lines:
                out.write(line)
        else:
            build_mapfile(owner.name, spec, refs, ogcapi_url=ogcapi, out=out)
            MAPFILE_BUILDS.labels(namespace=owner.namespace, service=owner.name).inc()
        packed = out.packed()
        config = build_config(owner.name, f"{builders.RUN_DIR}/{builders.MAPFILE}")
        sha = packed.sha256.copy()
        sha.update((config + builders.CHECK_SH + builders.PREPARE_SH).encode())
        digest = sha.hexdigest()[:10]  # = mapfile_hash(mapfile + config + the scripts)
        children = builders.build_children(
            owner, spec, packed, config, digest, settings.mapserver_image, settings.network_policies, rdigest
        )
        return digest, children

    async def _reconcile(self, body: dict, exclude: set[str]) -> None:
        state, settings = self.state, self.state.settings
        call, kube = state.call, state.kube
        meta = body["metadata"]
        ns, name, gen = meta["namespace"], meta["name"], meta.get("generation")
        t0 = time.thread_time()  # the synchronous parts below are what a selection of 10,000 costs
        old_status = dict(body.get("status") or {})
        ref = event_ref(body, "MapService")
        spec = MapServiceSpec.model_validate(body["spec"])
        owner = builders.Owner(name, ns, meta["uid"])
        tc = spec.tile_cache
        cached = tc is not None and tc.enabled
        # The datasets as this pass sees them: the mapfile and the tile cache's dataset versions
        # must come from the same snapshots (the store changes while the pass awaits the API; a tile
        # version of a newer snapshot could go live before MapServer serves that snapshot's mapfile).
        snaps = {d["name"]: d for d in state.datasets_in(ns)} if cached else {}

        # render (after a restart, the live ConfigMap may already hold this very mapfile)
        live_cm = None
        if (ns, name) not in self.rendered and old_status.get("configMap"):
            live_cm = await call(kube.get, *CONFIG_MAP, ns, old_status["configMap"])
        # render and build (the children are pure functions of the render key: built with it)
        rendered = self._render(owner, spec, gen, exclude, t0, live_cm)
        if rendered is None:
            return
        digest, children = rendered.digest, rendered.children
        cost = time.thread_time() - t0
        # apply
        config_map = children["configmap"]["metadata"]["name"]
        live_deploy = await call(kube.get, *DEPLOYMENT, ns, name)
        created_cm, _ = await call(kube.apply, children["configmap"])
        if created_cm:
            MAPFILE_RENDERS.labels(namespace=ns, service=name).inc()
            message = f"mapfile {digest} with {len(rendered.datasets)} layers"
            await call(kube.event, ref, "Normal", "MapfileUpdated", message)
        changed, deploy = await call(kube.apply, children["deployment"], live_deploy)
        if changed and live_deploy is not None:
            await call(kube.event, ref, "Normal", "DeploymentUpdated", "MapServer deployment updated")
        await call(kube.apply, children["service"])
        for api_version, kind in OPTIONAL_KINDS:
            desired = children[kind]
            if desired is not None:
                await call(kube.apply, desired)
            elif await call(kube.get, api_version, kind, ns, name) is not None:
                await call(kube.delete, api_version, kind, ns, name)
                await call(kube.event, ref, "Normal", "Removed", f"{kind} removed (no longer in spec)")
        await prune_configmaps(state, ns, name, keep=config_map)
        ro = rollout_of(deploy, spec.replicas)
        stall = None if ro.rolled else await self._rollout_stall(ns, name, digest, deploy)
        if not ro.rolled and not stall:
            self._poll_rollout(ns, name)  # (a failing mapfile check changes no Deployment status)
        tile_cache = await self.tile_caches.reconcile(
            owner,
            spec,
            rendered.datasets,
            ro.rolled,
            ref,
            had_cache=bool(old_status.get("tileCache")),
            snaps=snaps,
        )
        # status
        status, conds = service_status(
            gen,
            ro,
            stall,
            [d.name for d in rendered.datasets],
            rendered.excluded,
            digest,
            config_map,
            builders.service_url(name, ns, spec, settings.service_url_template),
            tile_cache,
            tile_cache_wms=cached and tc.wms,
            ogcapi=builders.ogcapi_url(name, ns, spec, settings.service_url_template),
        )
        if settle_status(old_status, status, conds):
            await call(kube.patch_status, API_VERSION, "MapService", ns, name, status)
            for event in service_events(old_status, status, conds, stall):
                await call(kube.event, ref, *event)
        # datasets whose servedBy changes because of this service
        t0 = time.thread_time()
        before = set(old_status.get("datasets") or [])
        matches = spec.dataset_selector.matches
        self.served.check(
            ns, (d for d in state.datasets_in(ns) if d["name"] in before or matches(d["labels"]))
        )
        self.service_cost[(ns, name)] = cost + time.thread_time() - t0
        SERVICE_PASSES.labels(namespace=ns, service=name).inc()  # (servedBy fixes are queued by now)

    async def _rollout_stall(self, ns: str, name: str, digest: str, deploy: dict) -> Problem | None:
        """Why the MapServer rollout of this mapfile cannot finish, if it cannot (rollout.py)."""
        state = self.state
        selector = f"app.kubernetes.io/instance={name},app.kubernetes.io/component=mapserver"
        failed = rollout.failed_check(await state.call(state.kube.list, *POD, ns, selector), digest)
        if failed:
            log_text = await state.call(rollout.check_log, state.kube, ns, failed[0])
            return rollout.load_failure(failed[0], failed[1], log_text)
        return rollout.deadline_exceeded(deploy)

    def _poll_rollout(self, ns: str, name: str) -> None:
        """Look at the service again in a while: a rollout in progress may stall without any event."""
        key = (ns, name)
        if key in self.rollout_polls:
            return

        def fire() -> None:
            self.rollout_polls.pop(key, None)
            self.queue.request(key)

        self.rollout_polls[key] = asyncio.get_running_loop().call_later(ROLLOUT_POLL, fire)

    async def _report_failure(self, body: dict, error: ApiError) -> None:
        state = self.state
        meta = body["metadata"]
        gen = meta.get("generation")
        old = dict(body.get("status") or {})
        message = str(error)[:1000]
        conds = status_conditions(
            gen, ready=False, reason="ApplyFailed", message=message, stalled=("ApplyFailed", message)
        )
        status = {"observedGeneration": gen}
        if settle_status(old, status, conds):
            ns, name = meta["namespace"], meta["name"]
            await state.call(state.kube.patch_status, API_VERSION, "MapService", ns, name, status)
            await state.call(
                state.kube.event, event_ref(body, "MapService"), "Warning", "ApplyFailed", message
            )

    async def release(self, body: Mapping) -> None:
        """Finalizer: delete every child, check none is left, then let the MapService go."""
        meta = body["metadata"]
        ns, name = meta["namespace"], meta["name"]
        async with self.state.lock((ns, name)):
            await delete_children(self.state, ns, name)
        self.forget(ns, name)
        for d in self.state.datasets_in(ns):
            if name in (d["status"].get("servedBy") or []):
                self.served.queue.request((ns, d["name"]))

    def forget(self, ns: str, name: str) -> None:
        """Drop what is kept in memory for a released service (its render cache holds the mapfile)."""
        for table in (self.rendered, self.pending_since, self.service_cost, self.state.locks):
            table.pop((ns, name), None)
        poll = self.rollout_polls.pop((ns, name), None)
        if poll is not None:
            poll.cancel()
