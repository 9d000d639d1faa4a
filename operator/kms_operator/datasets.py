"""MapDataset reconcile: validate the spec, inspect the source (GDAL, once per generation), write
Ready/Stalled with the inspected extent and shape and the servedBy fields, tell the services."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Mapping

from pydantic import ValidationError

from kms_crds import API_VERSION
from kms_crds.mapdataset import MapDatasetSpec

from .conditions import get_condition, settle_status, status_conditions
from .inspect_source import InspectError, inspect_source
from .kube import event_ref
from .mapfile import layer_name
from .metrics import DATASET_PASSES, EVENTS_SKIPPED, RECONCILE_SECONDS, RECONCILES
from .queues import Key, TokenBucket
from .served import Served
from .snapshots import selector_of
from .state import GDAL, State

SOURCE_VALID = ("SourceValid", "source found and readable")


class Datasets:
    """The MapDataset reconciler. `request_service` queues a service reconcile;
    `reconcile_service(ns, name, exclude)` runs one now (a dataset's release)."""

    def __init__(
        self,
        state: State,
        served: Served,
        request_service: Callable[[Key, bool], None],
        reconcile_service: Callable[[str, str, set[str]], Awaitable[None]],
    ):
        self.state, self.served = state, served
        self.request_service, self.reconcile_service = request_service, reconcile_service
        # Normal Events (a dataset became Ready) within a budget: a bulk apply of 10,000 datasets
        # would otherwise add 10,000 Event writes to the apiserver's busiest minute
        self.normal_events = TokenBucket(rate=1.0, burst=20)

    async def _inspect(self, spec: MapDatasetSpec) -> tuple[str, object]:
        """("ok", Inspection) or ("error", Problem). Runs once per reconcile, which the dataset
        watch asks for only when the spec, labels or finalizer changed, or after a restart."""
        try:
            insp = await GDAL.run(inspect_source, spec, self.state.settings)
            return "ok", insp
        except InspectError as e:
            return "error", (e.reason, e.message)

    async def reconcile(self, body: Mapping) -> None:
        """Validate and inspect the source; write Ready/Degraded, extent and servedBy; tell services."""
        t0 = time.monotonic()
        state = self.state
        meta = body["metadata"]
        ns, name, gen = meta["namespace"], meta["name"], meta.get("generation")
        labels = meta.get("labels") or {}
        old = dict(body.get("status") or {})
        result = problem = None
        try:
            spec = MapDatasetSpec.model_validate(dict(body["spec"]))
        except ValidationError as e:
            problem = ("InvalidSpec", str(e).replace("\n", " ")[:800])
        else:
            kind, value = await self._inspect(spec)
            result, problem = (value, None) if kind == "ok" else (None, value)
        status: dict = {"observedGeneration": gen}
        if problem:
            conds = status_conditions(
                gen, ready=False, reason=problem[0], message=problem[1], stalled=problem
            )
        else:
            status.update(result.status(layer_name(spec.identifier)).wire())
            conds = status_conditions(gen, ready=True, reason=SOURCE_VALID[0], message=SOURCE_VALID[1])
        status.update(self.served.status(ns, name, labels, not problem, body["spec"], {**old, **status}))
        if settle_status(old, status, conds):
            written = await state.kube.patch_status_async(API_VERSION, "MapDataset", ns, name, status)
            state.dataset_written(written)
            was = get_condition(old, "Ready")
            ref = event_ref(body, "MapDataset")
            if problem and (not was or was.get("reason") != problem[0]):
                await state.call(state.kube.event, ref, "Warning", *problem)
            elif not problem and (not was or was.get("status") != "True"):
                if self.normal_events.take():
                    await state.call(state.kube.event, ref, "Normal", *SOURCE_VALID)
                else:
                    EVENTS_SKIPPED.labels(reason=SOURCE_VALID[0]).inc()
        RECONCILES.labels(kind="MapDataset", result="problem" if problem else "ok").inc()
        DATASET_PASSES.labels(namespace=ns).inc()
        RECONCILE_SECONDS.labels(kind="MapDataset").observe(time.monotonic() - t0)

    def notify_services(self, ns: str, dataset: str, dataset_labels: Mapping, now: bool = False) -> None:
        """Queue a re-render of the services that select this dataset now or served it before
        (`now`: the last dataset of the namespace being inspected is done; a service waiting
        for them looks at once, not at its next look)."""
        for s in self.state.services_in(ns):
            if dataset in s["datasets"] or selector_of(s).matches(dataset_labels):
                self.request_service((ns, s["name"]), now)

    async def release(self, body: Mapping) -> None:
        """Finalizer: take the dataset out of every service that serves it, then let it go."""
        meta = body["metadata"]
        ns, name = meta["namespace"], meta["name"]
        for s in self.state.services_in(ns):
            if name in s["datasets"] or selector_of(s).matches(dict(meta.get("labels") or {})):
                await self.reconcile_service(ns, s["name"], {name})
