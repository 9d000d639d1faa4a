"""What the operator keeps in memory about MapDatasets and MapServices (the informers' snapshots), and
the pure functions that select and order a service's datasets from them. No I/O."""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import sys
import zlib
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import NamedTuple

from pydantic import ValidationError

from kms_crds.common import LabelSelector
from kms_crds.mapdataset import SHAPE_STATUS_FIELDS, MapDatasetSpec, MapDatasetStatus
from kms_crds.mapservice import MapServiceSpec

from . import mapfile as mapfile_module
from . import mapfile_layers
from .conditions import get_condition
from .mapfile import DatasetInput, LayerRef, epsg, layer_name

log = logging.getLogger("kms_operator")
RENDER_STATUS_FIELDS = (*SHAPE_STATUS_FIELDS, "sourceLayer")  # what a service's mapfile depends on


# A preset dictionary for the status: most of a dataset's status JSON is the same key names and
# condition boilerplate, which deflate with this dictionary stores in ~140 bytes instead of ~1.2 KB.
_STATUS_WORDS = json.dumps(
    {
        "observedGeneration": 1,
        "conditions": [
            {
                "type": t,
                "status": "False",
                "reason": "AsExpected",
                "message": "source found and readable",
                "observedGeneration": 1,
                "lastTransitionTime": "2026-",
            }
            for t in ("Ready", "Progressing", "Degraded", "Reconciling", "Stalled")
        ],
        "extent": {"crs": "EPSG:", "minx": 0, "miny": 0, "maxx": 0, "maxy": 0},
        "wgs84Bbox": [],
        "size": 0,
        "bandCount": 0,
        "valueRange": {"min": 0, "max": 0},
        "geometryType": "",
        "sourceLayer": "",
        "layerName": "",
        "servedBy": [],
        "url": "http://.svc.cluster.local:8080/?SERVICE=WMS&REQUEST=GetCapabilities",
        "ogcapi": None,
        "tileCache": None,
    },
    separators=(",", ":"),
).encode()
_WBITS = -11  # raw deflate, 2 KB window (the dictionary fits; small windows are cheap to set up)


def _pack(value: Mapping | None) -> bytes:
    c = zlib.compressobj(6, zlib.DEFLATED, _WBITS, 2, zdict=_STATUS_WORDS)
    return c.compress(json.dumps(value or {}, separators=(",", ":"), ensure_ascii=False).encode()) + c.flush()


def _unpack(packed: bytes) -> dict:
    return json.loads(zlib.decompressobj(_WBITS, zdict=_STATUS_WORDS).decompress(packed))


class DatasetSnapshot:
    """A MapDataset as the operator keeps it in memory (its store entry), compact: a slotted
    object (not a dict), spec as JSON bytes and status deflated, decoded afresh when read as
    snapshot["spec"] / ["status"]. What the hot paths need (readiness, the layer and render
    parts) is kept decoded. About 1.5 KB a dataset (a decoded body is ~20 KB)."""

    __slots__ = (
        "_layer",
        "_ready",
        "_render",
        "_spec",
        "_status",
        "deleting",
        "finalizers",
        "generation",
        "labels",
        "name",
        "ns",
        "rv",
        "uid",
    )  # fmt: skip

    def __init__(self, **fields: object):
        for key, value in fields.items():
            setattr(self, key, value)

    def __getitem__(self, key: str):
        if key == "spec":
            return json.loads(self._spec)
        if key == "status":
            return _unpack(self._status)
        try:
            return getattr(self, key)
        except AttributeError:
            raise KeyError(key) from None

    def __contains__(self, key: str) -> bool:
        return key in ("spec", "status") or key in self.__slots__

    def get(self, key: str, default: object = None) -> object:
        try:
            return self[key]
        except KeyError:
            return default


def dataset_snapshot(body: Mapping) -> DatasetSnapshot:
    """What the operator keeps in memory about a MapDataset (its store entry). A new snapshot is
    made on every change of the object."""
    meta = body.get("metadata", {})
    status = body.get("status") or {}
    spec = body.get("spec") or {}
    ready = get_condition(status, "Ready") or {}
    identifier = spec.get("identifier") or ""
    name = meta.get("name")
    return DatasetSnapshot(
        name=name,
        ns=sys.intern(meta.get("namespace") or ""),
        uid=meta.get("uid"),
        rv=meta.get("resourceVersion"),
        generation=meta.get("generation"),
        labels={sys.intern(k): sys.intern(v) for k, v in (meta.get("labels") or {}).items()},
        deleting=bool(meta.get("deletionTimestamp")),
        finalizers=tuple(sys.intern(f) for f in meta.get("finalizers") or ()),
        _spec=json.dumps(spec, separators=(",", ":"), ensure_ascii=False).encode(),  # (~200 bytes)
        _status=_pack(status),
        # the Ready condition: (status, reason, observedGeneration), or None without one
        _ready=(ready.get("status"), ready.get("reason"), ready.get("observedGeneration")) if ready else None,
        # what selection, layer order and map extent need, without parsing the spec (see LayerRef)
        _layer=(
            identifier,
            layer_name(identifier),
            spec.get("title"),
            epsg(spec.get("projection")) or epsg((status.get("extent") or {}).get("crs")),
            status.get("wgs84Bbox"),
        ),
        # what the mapfile depends on (compared, never read): the inspected shape as a digest
        _render=(
            name,
            meta.get("generation"),
            ready.get("status"),
            ready.get("reason"),
            ready.get("observedGeneration"),
            hashlib.blake2b(
                json.dumps([status.get(k) for k in RENDER_STATUS_FIELDS], sort_keys=True).encode(),
                digest_size=16,
            ).digest(),
        ),
    )


class _SlimSpec(NamedTuple):
    identifier: str
    title: str | None


class _SlimStatus(NamedTuple):
    wgs84_bbox: list[float] | None


class SlimInput(NamedTuple):
    """What the status and the tile cache need of a served dataset (name, identifier, title, bbox)."""

    name: str
    spec: _SlimSpec
    status: _SlimStatus


def service_snapshot(body: Mapping) -> dict:
    meta = body.get("metadata", {})
    return {
        "name": meta.get("name"),
        "ns": meta.get("namespace") or "",
        "rv": meta.get("resourceVersion"),
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


def is_pending(d: dict) -> bool:
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


def slim_input(d: dict) -> SlimInput:
    identifier, _, title, _, bbox = d["_layer"]
    return SlimInput(d["name"], _SlimSpec(identifier, title), _SlimStatus(bbox))


def services_context(services: Iterable[dict]) -> tuple:
    """Identity of the services of a namespace as far as a dataset's servedBy, url and tile
    cache depend on them."""
    return tuple(sorted((s["name"], s["uid"], s.get("generation"), s["deleting"]) for s in services))


def selected(datasets: Iterable[dict], spec: MapServiceSpec, exclude: set[str]) -> list[dict]:
    """The snapshots the service's selector selects (not those being deleted or excluded)."""
    matches = spec.dataset_selector.matches
    return [d for d in datasets if not d["deleting"] and d["name"] not in exclude and matches(d["labels"])]


def render_key(
    datasets: Iterable[dict], generation: int | None, spec: MapServiceSpec, exclude: set[str]
) -> tuple:
    """Everything the mapfile depends on: the service generation and, per selected dataset,
    its generation, readiness and inspected shape (not servedBy, url or timestamps)."""
    return generation, tuple(sorted(render_part(d) for d in selected(datasets, spec, exclude)))


# the mapfile writer's own code: a new version of it renders again what an old one wrote
RENDERER = hashlib.sha256(
    b"".join(Path(m.__file__).read_bytes() for m in (mapfile_module, mapfile_layers))
).hexdigest()[:16]


def render_digest(key: tuple, ogcapi_url: str | None) -> str:
    """A digest of a render key, the OGC API URL and the renderer: equal digests, equal mapfiles."""
    return hashlib.sha256(repr((RENDERER, ogcapi_url, key)).encode()).hexdigest()[:32]


class Selection(NamedTuple):
    """A service's datasets: included (as slim inputs and as layer refs), excluded with reasons,
    and pending (selected but not inspected for their generation yet)."""

    included: list[SlimInput]
    refs: list[LayerRef]
    excluded: list[str]
    pending: list[str]


def select(datasets: Iterable[dict], spec: MapServiceSpec, exclude: set[str]) -> Selection:
    """Sort the selected datasets into a Selection, in name order. Nothing is parsed here: Ready
    means valid for the current generation."""
    out = Selection([], [], [], [])
    seen_layers: dict[str, str] = {}
    for d in sorted(selected(datasets, spec, exclude), key=lambda d: d["name"]):
        if not is_ready(d):
            ready = d["_ready"]
            if is_pending(d):
                out.pending.append(d["name"])
            else:
                out.excluded.append(f"{d['name']} ({ready[1] if ready else 'NotInspected'})")
            continue
        layer = d["_layer"][1]
        if layer in seen_layers:
            out.excluded.append(f"{d['name']} (DuplicateLayerName with {seen_layers[layer]})")
            continue
        seen_layers[layer] = d["name"]
        out.included.append(slim_input(d))
        out.refs.append(layer_ref(d))
    return out


def body_of(d: dict) -> dict:
    """The parts of a MapDataset a reconcile reads, rebuilt from its snapshot."""
    meta = {k: d[k] for k in ("name", "uid", "generation", "labels", "finalizers")}
    meta.update(namespace=d["ns"], resourceVersion=d["rv"])
    return {"metadata": meta, "spec": d["spec"], "status": d["status"]}


def newer(rv: str | None, than: str | None) -> bool:
    """Is resourceVersion `rv` newer than `than`? (etcd revisions; opaque ones count as newer)"""
    if rv is None or than is None or not (rv.isdigit() and than.isdigit()):
        return rv != than
    return int(rv) > int(than)


class SnapshotStore:
    """Snapshots of one kind per namespace, kept by an Informer (informer.py): `store.get(ns, ())`
    gives a namespace's snapshots (the shape of the Kopf index it replaces)."""

    def __init__(self) -> None:
        self.by_ns: dict[str, dict[str, dict]] = {}

    def get(self, ns: str, default: Iterable[dict] = ()) -> Iterable[dict]:
        snaps = self.by_ns.get(ns)
        return snaps.values() if snaps else default

    def find(self, ns: str, name: str) -> dict | None:
        return self.by_ns.get(ns, {}).get(name)

    def put(self, snap: dict) -> dict | None:
        """Store the snapshot; the one it replaces (None if new)."""
        snaps = self.by_ns.setdefault(snap["ns"], {})
        old = snaps.get(snap["name"])
        snaps[snap["name"]] = snap
        return old

    def remove(self, ns: str, name: str) -> dict | None:
        snaps = self.by_ns.get(ns)
        old = snaps.pop(name, None) if snaps else None
        if snaps is not None and not snaps:
            del self.by_ns[ns]
        return old

    def keys(self, ns: str | None) -> set[tuple[str, str]]:
        """(namespace, name) of every stored snapshot (of one namespace, or all)."""
        spaces = [ns] if ns is not None else list(self.by_ns)
        return {(n, name) for n in spaces for name in self.by_ns.get(n, {})}

    def __len__(self) -> int:
        return sum(map(len, self.by_ns.values()))
