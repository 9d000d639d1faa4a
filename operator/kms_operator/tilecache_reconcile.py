"""The tile cache of a MapService (spec.tileCache): its MapCache children, held back until
MapServer serves the new mapfile, and the automatic cache-seed / cache-purge MapJobs."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence

from kms_crds import API_VERSION
from kms_crds.mapservice import MapServiceSpec, TileCache

from . import builders, tilecache
from .children import config_map_of, prune_configmaps
from .kinds import CONFIG_MAP, DEPLOYMENT, NETWORK_POLICY, SERVICE
from .mapfile import layer_name
from .snapshots import SlimInput
from .state import State

TERMINAL_PHASES = ("Succeeded", "Failed", "Cancelled")


def _versions_of(configmap: Mapping | None) -> dict:
    """The dataset versions a tile cache ConfigMap served."""
    configmap = configmap or {}
    text = tilecache.configmap_file(
        configmap.get("data"), configmap.get("binaryData"), tilecache.VERSIONS_FILE
    )
    return json.loads(text or "{}")


class TileCaches:
    def __init__(self, state: State):
        self.state = state

    async def reconcile(
        self,
        owner: builders.Owner,
        spec: MapServiceSpec,
        datasets: Sequence[SlimInput],
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
        pod still serving during the tile cache's own rollout would write them again). Returns the
        service's status.tileCache."""
        state, settings = self.state, self.state.settings
        call, kube = state.call, state.kube
        ns, name = owner.namespace, owner.name
        tc, tname = spec.tile_cache, tilecache.tiles_name(name)
        if (tc is None or not tc.enabled) and not had_cache:
            return None
        live = await call(kube.get, *DEPLOYMENT, ns, tname)
        if tc is None or not tc.enabled:
            if live is not None:
                for kind in (DEPLOYMENT, SERVICE, NETWORK_POLICY):
                    await call(kube.delete, *kind, ns, tname)
                await call(kube.event, ref, "Normal", "Removed", "tile cache removed (not in spec)")
            await prune_configmaps(state, ns, name, keep="", component="tilecache-config")
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
        source = settings.tiles_source_template.format(name=name, namespace=ns)
        xml = tilecache.build_mapcache_xml(name, tc, tilesets, source)
        digest = tilecache.config_digest(xml)
        cm = tilecache.build_tiles_configmap(owner, xml, versions, digest)
        live_cm = config_map_of(live)
        cm_name = cm["metadata"]["name"]
        deploy = live
        # MapServer still rolling out the new mapfile: the cache stays on the old configuration (the
        # Deployment's status events bring the service back here once the rollout completes)
        held = live is not None and live_cm != cm_name and not rolled
        if held:
            cm_name = live_cm
        else:
            before: dict = {}
            if live_cm and live_cm != cm_name:
                before = _versions_of(await call(kube.get, *CONFIG_MAP, ns, live_cm))
            await call(kube.apply, cm)
            _, deploy = await call(
                kube.apply,
                tilecache.build_tiles_deployment(
                    owner, tc, cm_name, digest, settings.tiles_image, tilecache.config_path(cm)
                ),
                live,
            )
            await call(kube.apply, tilecache.build_tiles_service(owner))
            policy = tilecache.build_tiles_network_policy(owner, spec) if settings.network_policies else None
            if policy is not None:
                await call(kube.apply, policy)
            elif await call(kube.get, *NETWORK_POLICY, ns, tname):
                await call(kube.delete, *NETWORK_POLICY, ns, tname)
            if live_cm != cm_name:
                await call(
                    kube.event,
                    ref,
                    "Normal",
                    "TileCacheUpdated",
                    f"tile cache configuration {digest[:10]} with {len(tilesets)} tilesets",
                )
                await self._seed_jobs(owner, tc, before, versions, live_cm or "")

            async def purge_retired(old_cm: dict) -> None:
                """No pod serves old_cm any more: purge its versions the current config dropped."""
                await self._purge_jobs(owner, tc, old_cm, versions)

            # (a held-back config is not live: its versions are no reference for a purge)
            await prune_configmaps(
                state, ns, name, keep=cm_name or "", component="tilecache-config", retired=purge_retired
            )
        base = settings.tiles_url_template.format(name=name, namespace=ns)
        return {
            **tilecache.tile_urls(base, tc),
            "configMap": cm_name,
            "tilesets": len(tilesets),
            "readyReplicas": ((deploy or {}).get("status") or {}).get("readyReplicas", 0),
        }

    async def _purge_jobs(self, owner: builders.Owner, tc: TileCache, retired: dict, after: dict) -> None:
        """Purge the tiles of datasets changed or removed since a configuration now retired."""
        before = _versions_of(retired)
        jobs = tilecache.purge_mapjobs(owner, tc, before, after, retired["metadata"]["name"])
        for job in jobs:
            await self.state.call(self.state.kube.apply, job)
        if jobs:
            await self._prune_auto_jobs(owner)

    async def _seed_jobs(
        self, owner: builders.Owner, tc: TileCache, before: dict, after: dict, replaced: str
    ) -> None:
        """Seed new and changed datasets (seed policy) when a new configuration goes live."""
        if not tc.storage.persistent_volume_claim:
            return
        for job in tilecache.seed_mapjobs(owner, tc, before, after, replaced):
            await self.state.call(self.state.kube.apply, job)
        await self._prune_auto_jobs(owner)

    async def _prune_auto_jobs(self, owner: builders.Owner, keep: int = 10) -> None:
        """Automatic cache jobs do not pile up: finished ones beyond the newest `keep` are deleted."""
        state = self.state
        selector = f"app.kubernetes.io/instance={owner.name},maps.kube-mapserver.io/automatic=true"
        jobs = await state.call(state.kube.list, API_VERSION, "MapJob", owner.namespace, selector)
        done = [j for j in jobs if (j.get("status") or {}).get("phase") in TERMINAL_PHASES]
        done.sort(key=lambda j: j["metadata"].get("creationTimestamp") or "", reverse=True)
        for j in done[keep:]:
            await state.call(state.kube.delete, API_VERSION, "MapJob", owner.namespace, j["metadata"]["name"])
