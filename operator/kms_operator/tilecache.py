"""MapService.spec.tileCache -> MapCache configuration and the tile cache's children (pure;
golden-tested). MapCache runs as its own Deployment `<service>-tiles` (Apache with mod_mapcache,
the reference way to serve MapCache), not as a sidecar: cache hits are cheap and renders are not, so
the two scale apart; a new cache configuration does not restart MapServer; and seeding Jobs mount
the same cache volume.

Consistency: every dataset has a cache *version* (a hash of everything that can change its
rendering). Tiles live under `<root>/<service>/<dataset>/<version>`, so a changed dataset is served
from a fresh directory as soon as the new configuration is live: stale tiles are never served, and
the outdated directories are purged by a cache-purge MapJob."""

from __future__ import annotations

import hashlib
import json
import xml.etree.ElementTree as ET
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from kms_crds.configmap_files import is_gzipped, put_file, read_file
from kms_crds.job_types import job_type as registered_type
from kms_crds.mapdataset import SHAPE_STATUS_FIELDS
from kms_crds.mapservice import DEFAULT_TILES_IMAGE, DEFAULT_TILES_RESOURCES, MapServiceSpec, TileCache

from .builders import Owner
from .labels import HASH_ANNOTATION, tiles_selector
from .network_policies import build_tiles_policy
from .pod_defaults import CONTAINER_SECURITY, LIFECYCLE, TERMINATION_GRACE_SECONDS

CACHE_ROOT = "/var/cache/mapcache"
CONFIG_DIR = "/etc/mapcache"
CONFIG_FILE = "mapcache.xml"
VERSIONS_FILE = "versions.json"
PORT = 8080
TILES_UID = 10001
HTTPD_COMMAND = "kms-mapcache-httpd"  # the tile cache image's entry script: Apache + mod_mapcache
HEALTH_PATH = "/tms/1.0.0/"  # answered by MapCache itself from the configuration (no rendering)
VERSION_STATUS_FIELDS = (*SHAPE_STATUS_FIELDS, "checksum", "size")  # what a dataset's tiles depend on
FORMATS = {"png": ("kms-png", "PNG", "image/png", "png"), "jpeg": ("kms-jpeg", "JPEG", "image/jpeg", "jpg")}
MERCATOR_LAT = 85.0511287798066


@dataclass(frozen=True)
class Tileset:
    """One served dataset as MapCache sees it."""

    name: str  # the MapDataset's name: tileset name in every tile URL
    layer: str  # its OGC layer name in the MapServer WMS
    version: str
    title: str = ""
    wgs84_bbox: tuple[float, float, float, float] | None = None


def dataset_version(spec: Mapping, status: Mapping) -> str:
    """Changes whenever the dataset's tiles may change: its spec (source, style, ...), the
    inspected shape of its data and its checksum/size."""
    doc = {"spec": spec, "status": {k: status.get(k) for k in VERSION_STATUS_FIELDS}}
    return hashlib.sha256(json.dumps(doc, sort_keys=True, default=str).encode()).hexdigest()[:12]


def tiles_name(service: str) -> str:
    return f"{service}-tiles"


def cache_path(service: str, dataset: str, version: str, storage: str) -> str:
    base = f"{CACHE_ROOT}/{service}/{dataset}/{version}"
    return f"{base}.sqlite3" if storage == "sqlite" else base


def tile_urls(base: str, tc: TileCache) -> dict[str, str]:
    """Client URLs of a cache at `base` (templates use {dataset}, {grid}, {z}, {x}, {y})."""
    base = base if base.endswith("/") else base + "/"
    ext = FORMATS[tc.format][3]
    return {
        "url": base,
        "wmts": f"{base}wmts?SERVICE=WMTS&REQUEST=GetCapabilities",
        "tms": base + "tms/1.0.0/{dataset}@{grid}/{z}/{x}/{y}." + ext,
        "xyz": base + "gmaps/{dataset}@GoogleMapsCompatible/{z}/{x}/{y}." + ext,
        "wms": f"{base}?SERVICE=WMS&REQUEST=GetCapabilities",
    }


def _sub(parent: ET.Element, tag: str, text: str | None = None, **attrs: str) -> ET.Element:
    el = ET.SubElement(parent, tag, attrs)
    if text is not None:
        el.text = text
    return el


def build_mapcache_xml(service: str, tc: TileCache, tilesets: Iterable[Tileset], source_url: str) -> str:
    """The MapCache configuration: per dataset a cache (its versioned directory or database), a
    WMS source (the service's own MapServer, one layer) and a tileset on the configured grids."""
    root = ET.Element("mapcache")
    fmt_name, fmt_type, mime, _ = FORMATS[tc.format]
    fmt = _sub(root, "format", name=fmt_name, type=fmt_type)
    if tc.format == "png":
        _sub(fmt, "compression", "fast")
    else:
        _sub(fmt, "quality", "85")
    for ts in sorted(tilesets, key=lambda t: t.name):
        path = cache_path(service, ts.name, ts.version, tc.storage.type)
        if tc.storage.type == "sqlite":
            cache = _sub(root, "cache", name=f"cache-{ts.name}", type="sqlite3")
            _sub(cache, "dbfile", path)
        else:
            cache = _sub(root, "cache", name=f"cache-{ts.name}", type="disk")
            _sub(cache, "base", path)
            _sub(cache, "symlink_blank")
        source = _sub(root, "source", name=f"wms-{ts.name}", type="wms")
        params = _sub(_sub(source, "getmap"), "params")
        _sub(params, "FORMAT", mime)
        _sub(params, "LAYERS", ts.layer)
        _sub(params, "TRANSPARENT", "true" if tc.format == "png" else "false")
        http = _sub(source, "http")
        _sub(http, "url", source_url)
        _sub(http, "connection_timeout", "10")
        _sub(http, "timeout", "120")
        tileset = _sub(root, "tileset", name=ts.name)
        meta = _sub(tileset, "metadata")
        _sub(meta, "title", ts.title or ts.name)
        if ts.wgs84_bbox:
            _sub(meta, "wgs84boundingbox", " ".join(repr(float(v)) for v in ts.wgs84_bbox))
        _sub(tileset, "source", f"wms-{ts.name}")
        _sub(tileset, "cache", f"cache-{ts.name}")
        for grid in tc.grids:
            _sub(tileset, "grid", str(grid))
        _sub(tileset, "format", fmt_name)
        _sub(tileset, "metatile", f"{tc.metatile} {tc.metatile}")
        _sub(tileset, "metabuffer", "10" if tc.metatile > 1 else "0")
        _sub(tileset, "expires", str(tc.expires))
    _sub(root, "default_format", fmt_name)
    wms = _sub(root, "service", type="wms", enabled="true")
    _sub(wms, "full_wms", "assemble")
    _sub(wms, "resample_mode", "bilinear")
    _sub(wms, "format", fmt_name, allow_client_override="true")  # assembled maps: the tile format
    for name in ("wmts", "tms", "gmaps"):
        _sub(root, "service", type=name, enabled="true")
    for name in ("kml", "ve", "demo"):
        _sub(root, "service", type=name, enabled="false")
    _sub(root, "errors", "report")
    locker = _sub(root, "locker", type="disk")
    _sub(locker, "directory", "/tmp")
    _sub(locker, "timeout", "120")
    _sub(root, "threaded_fetching", "true")
    ET.indent(root)
    return '<?xml version="1.0" encoding="UTF-8"?>\n' + ET.tostring(root, encoding="unicode") + "\n"


def config_digest(xml: str) -> str:
    return hashlib.sha256(xml.encode()).hexdigest()[:16]


def _meta(owner: Owner, name: str, component: str) -> dict:
    meta = owner.meta(name, component)
    meta["labels"] = {**meta["labels"], "app.kubernetes.io/name": "mapcache"}
    return meta


def build_tiles_configmap(owner: Owner, xml: str, versions: Mapping[str, str], digest: str) -> dict:
    """The configuration and the dataset versions it serves; each file gzipped into binaryData
    (`<name>.gz`) when it is large."""
    meta = _meta(owner, f"{tiles_name(owner.name)}-{digest[:10]}", "tilecache-config")
    meta["annotations"] = {HASH_ANNOTATION: digest}
    cm: dict = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": meta, "immutable": True, "data": {}}
    for name, text in ((CONFIG_FILE, xml), (VERSIONS_FILE, json.dumps(dict(sorted(versions.items()))))):
        put_file(cm, name, text)  # gzipped when large (~700 bytes of XML per tileset)
    return cm


def configmap_file(data: Mapping | None, binary_data: Mapping | None, name: str) -> str | None:
    """A file of a tile cache ConfigMap, plain or gzipped (the inverse of build_tiles_configmap)."""
    return read_file(data, binary_data, name)


def config_path(configmap: Mapping) -> str:
    """Where the tile server finds the configuration in its pod (plain or .gz)."""
    return f"{CONFIG_DIR}/{CONFIG_FILE}" + (".gz" if is_gzipped(configmap, CONFIG_FILE) else "")


def build_tiles_deployment(
    owner: Owner,
    tc: TileCache,
    configmap: str,
    digest: str,
    default_image: str = DEFAULT_TILES_IMAGE,
    config: str = f"{CONFIG_DIR}/{CONFIG_FILE}",
) -> dict:
    """Apache with mod_mapcache (`kms-mapcache-httpd CONFIG`, the tile cache image), non-root; its
    readiness probe is a TMS capabilities request answered by MapCache from the configuration."""
    cache_volume: dict = {"name": "cache"}
    if tc.storage.persistent_volume_claim:
        cache_volume["persistentVolumeClaim"] = {"claimName": tc.storage.persistent_volume_claim}
    else:
        cache_volume["emptyDir"] = {"sizeLimit": tc.storage.size_limit}
    container: dict = {
        "name": "mapcache",
        "image": tc.image or default_image,
        "command": [HTTPD_COMMAND],
        "args": [config],
        "ports": [{"name": "http", "containerPort": PORT, "protocol": "TCP"}],
        "volumeMounts": [
            {"name": "config", "mountPath": CONFIG_DIR, "readOnly": True},
            {"name": "cache", "mountPath": CACHE_ROOT},
            {"name": "tmp", "mountPath": "/tmp"},
        ],
        "readinessProbe": {
            "httpGet": {"path": HEALTH_PATH, "port": "http"},
            "periodSeconds": 10,
            "timeoutSeconds": 5,
        },
        "livenessProbe": {
            "tcpSocket": {"port": "http"},
            "initialDelaySeconds": 10,
            "periodSeconds": 20,
        },
        "lifecycle": LIFECYCLE,
        "securityContext": {**CONTAINER_SECURITY, "runAsUser": TILES_UID, "runAsGroup": TILES_UID},
    }
    container["resources"] = (tc.resources or DEFAULT_TILES_RESOURCES).wire()
    # one pod at a time on a ReadWriteOnce volume; a surge pod first elsewhere
    strategy = {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 0, "maxSurge": 1}}
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": _meta(owner, tiles_name(owner.name), "tilecache"),
        "spec": {
            "replicas": tc.replicas,
            "selector": {"matchLabels": tiles_selector(owner.name)},
            "strategy": strategy,
            "revisionHistoryLimit": 3,
            "template": {
                "metadata": {
                    "labels": _meta(owner, "", "tilecache")["labels"],
                    "annotations": {HASH_ANNOTATION: digest},
                },
                "spec": {
                    "automountServiceAccountToken": False,
                    "enableServiceLinks": False,
                    "terminationGracePeriodSeconds": TERMINATION_GRACE_SECONDS,
                    "securityContext": {
                        "runAsNonRoot": True,
                        "runAsUser": TILES_UID,
                        "runAsGroup": TILES_UID,
                        "fsGroup": TILES_UID,
                        "seccompProfile": {"type": "RuntimeDefault"},
                    },
                    "containers": [container],
                    "volumes": [
                        {"name": "config", "configMap": {"name": configmap}},
                        cache_volume,
                        {"name": "tmp", "emptyDir": {"sizeLimit": "256Mi"}},
                    ],
                },
            },
        },
    }


def build_tiles_network_policy(owner: Owner, spec: MapServiceSpec) -> dict | None:
    """The tile-cache pods' NetworkPolicy (network_policies.py), or None when turned off."""
    meta = _meta(owner, tiles_name(owner.name), "network-policy")
    return build_tiles_policy(meta, owner.name, spec, tiles_selector(owner.name))


def build_tiles_service(owner: Owner) -> dict:
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": _meta(owner, tiles_name(owner.name), "tilecache"),
        "spec": {
            "type": "ClusterIP",
            "selector": tiles_selector(owner.name),
            "ports": [{"name": "http", "port": PORT, "targetPort": "http", "protocol": "TCP"}],
        },
    }


@dataclass(frozen=True)
class CacheChanges:
    """What a new configuration changes against the live one (dataset -> version)."""

    new: list[str]
    changed: list[str]
    removed: list[str]


def diff_versions(before: Mapping[str, str], after: Mapping[str, str]) -> CacheChanges:
    return CacheChanges(
        new=sorted(set(after) - set(before)),
        changed=sorted(d for d in after if d in before and before[d] != after[d]),
        removed=sorted(set(before) - set(after)),
    )


def auto_job_name(service: str, kind: str, payload: object) -> str:
    """A deterministic name, so a retried reconcile never creates the same job twice."""
    digest = hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:10]
    return f"{service[:36]}-cache-{kind}-{digest}"


def build_auto_mapjob(owner: Owner, name: str, job_type: str, params: dict, image: str | None = None) -> dict:
    """A MapJob the operator creates for the cache (owned by the MapService, labelled automatic)."""
    spec: dict = {"type": job_type, registered_type(job_type).field: params, "ttlSecondsAfterFinished": 3600}
    if image:
        spec["image"] = image
    meta = owner.meta(name, "tilecache-job")
    meta["labels"] = {**meta["labels"], "maps.kube-mapserver.io/automatic": "true"}
    return {"apiVersion": "maps.kube-mapserver.io/v1alpha1", "kind": "MapJob", "metadata": meta, "spec": spec}


def _chunks(items: list[str], size: int) -> list[list[str]]:
    return [items[i : i + size] for i in range(0, len(items), size)]


def seed_mapjobs(owner: Owner, tc: TileCache, before: dict, after: dict, replaced: str) -> list[dict]:
    """The cache-seed MapJobs of a configuration going live (seed policy): its new and changed
    datasets. `replaced` names the configuration it replaces: a dataset changed and changed back
    gets a new job for the same version (the one that seeded it first is done, and its tiles may
    have been purged since), while a retried reconcile of the same switch creates none twice."""
    if not tc.storage.persistent_volume_claim or not tc.seed:  # pod-local caches start empty
        return []
    changes = diff_versions(before, after)
    jobs = []
    for chunk in _chunks(sorted(changes.new + changes.changed), 1000):
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
        name = auto_job_name(owner.name, "seed", [params, [after[d] for d in chunk], replaced])
        jobs.append(build_auto_mapjob(owner, name, "cache-seed", params))
    return jobs


def purge_mapjobs(owner: Owner, tc: TileCache, before: dict, after: dict, retired: str) -> list[dict]:
    """The cache-purge MapJobs once configuration `retired` (dataset versions `before`) is served
    by no pod: the tiles of datasets it had that the live configuration (`after`) changed or
    dropped. Named by the retired configuration too, like seed_mapjobs."""
    if not tc.storage.persistent_volume_claim:  # pod-local caches went with their pods
        return []
    changes = diff_versions(before, after)
    jobs = []
    for chunk in _chunks(changes.changed + changes.removed, 1000):
        params = {"service": owner.name, "datasets": chunk, "keepCurrent": True}
        name = auto_job_name(owner.name, "purge", [params, [after.get(d) for d in chunk], retired])
        jobs.append(build_auto_mapjob(owner, name, "cache-purge", params))
    return jobs
