"""A dataset's servedBy, url and tileCache status fields: which services serve it and where. They
depend on the namespace's services, so a service reconcile re-checks the datasets it touches and
queues a status patch (batched per namespace) for those that are no longer right."""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, Mapping, Sequence

from kms_crds import API_VERSION

from . import builders, tilecache
from .queues import BatchQueue
from .settings import Settings
from .snapshots import is_ready, selector_of, service_spec_of, services_context
from .state import State


def served_status(
    settings: Settings,
    ns: str,
    name: str,
    dataset_labels: Mapping,
    ready: bool,
    spec: Mapping,
    status: Mapping,
    services: Sequence[dict],
) -> dict:
    """servedBy, url and tileCache of a dataset, from the namespace's service snapshots (pure)."""
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
            out["url"] = builders.service_url(service, ns, svc, settings.service_url_template)
            out["url"] += "?SERVICE=WMS&REQUEST=GetCapabilities"
            out["ogcapi"] = builders.collection_url(service, ns, svc, settings.service_url_template, spec)
        tc = svc.tile_cache
        if tc and tc.enabled:
            urls = tilecache.tile_urls(settings.tiles_url_template.format(name=service, namespace=ns), tc)
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


class Served:
    """Keeps the servedBy, url and tileCache of datasets right (a batch queue per namespace)."""

    def __init__(self, state: State):
        self.state = state
        self.queue = BatchQueue(
            "dataset servedBy", state.settings.debounce_seconds, self._batch, ready=state.synced
        )
        # per namespace: dataset name -> (resourceVersion, services context) when its servedBy, url
        # and tileCache were last found right: a service reconcile re-checks only datasets changed since
        self.checked: dict[str, dict[str, tuple]] = {}

    def status(
        self, ns: str, name: str, labels: Mapping, ready: bool, spec: Mapping, status: Mapping
    ) -> dict:
        """The fields as the namespace's services make them now."""
        services = self.state.services_in(ns)
        return served_status(self.state.settings, ns, name, labels, ready, spec, status, services)

    def patch(self, ns: str, snap: dict, services: list[dict]) -> dict | None:
        """The status patch that sets the dataset's servedBy, url and tileCache right, if needed."""
        status = snap["status"]  # (decoded once: a snapshot decodes it on every read)
        want = served_status(
            self.state.settings,
            ns,
            snap["name"],
            snap["labels"],
            is_ready(snap),
            snap["spec"],
            status,
            services,
        )
        have = {k: status.get(k) for k in want}
        have["servedBy"] = have["servedBy"] or []
        return want if want != have else None

    async def _batch(self, ns: str, names: set[str]) -> dict[str, Exception]:
        """Check (and patch) servedBy, url and tileCache of these datasets; the failures by name."""
        state = self.state
        wanted = {d["name"]: d for d in state.datasets_in(ns) if d["name"] in names}
        services = state.services_in(ns)
        patches = []
        for name in sorted(wanted):
            snap = wanted[name]
            if not snap["deleting"]:
                patch = self.patch(ns, snap, services)
                if patch is not None:
                    patches.append((name, patch))
        failed: dict[str, Exception] = {}
        limit = asyncio.Semaphore(8)

        async def one(name: str, patch: dict) -> None:
            async with limit:
                try:
                    written = await state.call(
                        state.kube.patch_status, API_VERSION, "MapDataset", ns, name, patch
                    )
                    state.dataset_written(written)
                except Exception as e:
                    failed[name] = e

        await asyncio.gather(*(one(n, p) for n, p in patches))
        return failed

    def check(self, ns: str, candidates: Iterable[dict]) -> None:
        """Queue a servedBy check for those datasets whose servedBy, url or tileCache is not what
        the services now make it. A dataset found right is not looked at again until it or the
        namespace's services change."""
        services = self.state.services_in(ns)
        ctx = services_context(services)
        checked = self.checked.setdefault(ns, {})
        for d in candidates:
            name = d["name"]
            if checked.get(name) == (d["rv"], ctx) or d["deleting"]:
                continue
            if self.patch(ns, d, services) is None:
                checked[name] = (d["rv"], ctx)
            else:
                checked.pop(name, None)
                self.queue.request((ns, name))
        if len(checked) > 1000 and len(checked) > 2 * len(self.state.datasets.get(ns, ())):  # deleted ones
            present = {d["name"] for d in self.state.datasets_in(ns)}
            self.checked[ns] = {k: v for k, v in checked.items() if k in present}
