"""MapService: a MapServer deployment serving the MapDatasets its selector picks."""

from __future__ import annotations

from enum import StrEnum

from pydantic import Field, model_validator

from .common import (
    DNS_LABEL,
    SAFE_TEXT,
    Condition,
    KModel,
    LabelSelector,
    NetworkPeer,
    PrinterColumn,
    Resource,
    ResourceMeta,
    Resources,
    status_field,
)

# Our own MapServer 8 image (Debian's MapServer behind Apache + mod_fcgid, uid 33, port 8080);
# the operator's KMS_MAPSERVER_IMAGE (the chart sets it). The upstream camptocamp/mapserver:8.4
# keeps the same contract and can be named in spec.image.
DEFAULT_IMAGE = "ghcr.io/kube-mapserver/mapserver:0.1.0"
UPSTREAM_IMAGE = "camptocamp/mapserver:8.4"
# Our tile cache image: Apache + Debian's mod_mapcache (MapCache 1.14), uid 10001, port 8080.
DEFAULT_TILES_IMAGE = "ghcr.io/kube-mapserver/mapcache:0.1.0"
# Requests/limits of containers whose spec names none. The CPU limit of 2 gives MapServer its
# default of 4 FastCGI processes (two per CPU); the requests are small so that many services fit
# on a node, the limits keep one service from starving the others.
DEFAULT_MAPSERVER_RESOURCES = Resources(
    requests={"cpu": "50m", "memory": "64Mi"}, limits={"cpu": "2", "memory": "1Gi"}
)
DEFAULT_TILES_RESOURCES = Resources(
    requests={"cpu": "25m", "memory": "32Mi"}, limits={"cpu": "1", "memory": "512Mi"}
)


def _resources_text(r: Resources) -> str:
    def pairs(d: dict | None) -> str:
        return ", ".join(f"{k} {v}" for k, v in (d or {}).items())

    return f"requests {pairs(r.requests)}; limits {pairs(r.limits)}"


class DataVolume(KModel):
    """The volume holding the datasets' files, mounted read-only at /data."""

    persistent_volume_claim: str = Field(
        description="Name of the PVC with the data.", pattern=DNS_LABEL, max_length=253
    )
    sub_path: str | None = Field(
        None,
        description="Sub-directory of the volume to mount.",
        max_length=1024,
        pattern=r"^[^/\x00-\x1f\x7f][^\x00-\x1f\x7f]*$",
    )


class Ingress(KModel):
    """Expose the service through an Ingress (any controller: set its class)."""

    class_name: str | None = Field(
        None, description="IngressClass name, e.g. nginx or traefik.", max_length=253
    )
    host: str = Field(
        description="Host name, e.g. maps.example.org.",
        max_length=253,
        pattern=r"^(\*\.)?[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$",
    )
    path: str = Field(
        "/", description="Path prefix, e.g. /ocean.", max_length=512, pattern=r"^/[A-Za-z0-9/._~-]*$"
    )
    tls_secret_name: str | None = Field(
        None, description="Secret with the TLS certificate for host.", pattern=DNS_LABEL, max_length=253
    )
    annotations: dict[str, str] | None = Field(
        None, description="Extra annotations for the Ingress controller."
    )


class Autoscaling(KModel):
    """A HorizontalPodAutoscaler on CPU."""

    min_replicas: int = Field(1, ge=1, le=1000, description="Lower bound of replicas.")
    max_replicas: int = Field(ge=1, le=1000, description="Upper bound of replicas.")
    target_cpu_utilization: int = Field(70, ge=1, le=100, description="Target average CPU use in percent.")

    model_config = KModel.model_config | {
        "json_schema_extra": {
            "x-kubernetes-validations": [
                {
                    "rule": "self.minReplicas <= self.maxReplicas",
                    "message": "autoscaling.minReplicas must not exceed maxReplicas",
                }
            ]
        }
    }


class DisruptionBudget(KModel):
    """A PodDisruptionBudget; set exactly one of minAvailable or maxUnavailable."""

    min_available: int | None = Field(
        None, ge=0, description="Pods that must stay up during voluntary disruption."
    )
    max_unavailable: int | None = Field(
        None, ge=0, description="Pods that may be down during voluntary disruption."
    )

    model_config = KModel.model_config | {
        "json_schema_extra": {
            "x-kubernetes-validations": [
                {
                    "rule": "has(self.minAvailable) != has(self.maxUnavailable)",
                    "message": "podDisruptionBudget needs exactly one of minAvailable or maxUnavailable",
                }
            ]
        }
    }


class MapServerSettings(KModel):
    """Tuning of the MapServer processes."""

    max_requests_per_process: int = Field(
        1000, ge=1, description="Recycle a process after this many requests."
    )
    processes: int | None = Field(
        None, ge=1, le=64, description="FastCGI processes per pod (default: derived from the CPU limit)."
    )
    debug_level: int = Field(0, ge=0, le=5, description="MS_DEBUGLEVEL: 0 off .. 5 verbose.")
    max_size: int = Field(4096, ge=256, le=16384, description="Largest image side a request may ask for.")
    online_resource: str | None = Field(
        None,
        max_length=2048,
        pattern=r"^https?://[^\s\"'\\]+$",
        description="Public base URL written into capabilities (default: from the ingress).",
    )


class Probe(KModel):
    initial_delay_seconds: int = Field(5, ge=0, description="Delay before the first probe.")
    period_seconds: int = Field(10, ge=1, description="How often to probe.")
    timeout_seconds: int = Field(5, ge=1, description="Probe timeout.")
    failure_threshold: int = Field(3, ge=1, description="Failures before the probe fails.")


class Probes(KModel):
    """Readiness runs a real WMS GetCapabilities through MapServer; liveness checks the web server."""

    readiness: Probe = Field(default_factory=Probe, description="Readiness probe timings.")
    liveness: Probe = Field(
        default_factory=lambda: Probe(initial_delay_seconds=15, period_seconds=20),
        description="Liveness probe timings.",
    )


class TileGrid(StrEnum):
    """MapCache's predefined grids (the names appear in tile URLs)."""

    GoogleMapsCompatible = "GoogleMapsCompatible"  # EPSG:3857 web mercator, 1 tile at z0
    WGS84 = "WGS84"  # EPSG:4326, 2x1 tiles at z0


class TileFormat(StrEnum):
    png = "png"
    jpeg = "jpeg"


class CacheStorageType(StrEnum):
    disk = "disk"
    sqlite = "sqlite"


class CacheStorage(KModel):
    """Where tiles are kept. With a PVC the cache is shared by every cache pod and by seeding jobs
    (ReadWriteMany for more than one replica); without one each pod has its own emptyDir cache and
    seeding is not possible."""

    type: CacheStorageType = Field(
        CacheStorageType.disk, description="disk (one file per tile) or sqlite (one database per dataset)."
    )
    persistent_volume_claim: str | None = Field(
        None,
        description="PVC holding the cache (mounted at /var/cache/mapcache).",
        pattern=DNS_LABEL,
        max_length=253,
    )
    size_limit: str = Field(
        "1Gi", pattern=r"^[0-9]+(Ki|Mi|Gi|Ti)?$", description="Size limit of the emptyDir cache (no PVC)."
    )


class SeedPolicy(KModel):
    """What to seed: a grid, zoom levels and an area (a service's seed policy seeds each served
    dataset this way when it appears or changes; a cache-seed MapJob adds the service and datasets)."""

    grid: TileGrid = Field(TileGrid.GoogleMapsCompatible, description="Grid to seed.")
    min_zoom: int = Field(0, ge=0, le=18, description="First zoom level to seed.")
    max_zoom: int = Field(ge=0, le=18, description="Last zoom level to seed (at most 18; 17 on WGS84).")
    extent: list[float] | None = Field(
        None,
        min_length=4,
        max_length=4,
        description="Area in EPSG:4326 [minLon, minLat, maxLon, maxLat] (default: the datasets' extent).",
    )
    threads: int = Field(2, ge=1, le=8, description="Concurrent tile requests of the seeder.")

    model_config = KModel.model_config | {
        "json_schema_extra": {
            "x-kubernetes-validations": [
                {"rule": "self.minZoom <= self.maxZoom", "message": "minZoom must not exceed maxZoom"},
                {
                    "rule": "!has(self.extent) || "
                    "(self.extent[0] < self.extent[2] && self.extent[1] < self.extent[3])",
                    "message": "extent must be [minLon, minLat, maxLon, maxLat] with min < max",
                },
            ]
        }
    }

    @model_validator(mode="after")
    def _ranges(self) -> SeedPolicy:
        if self.min_zoom > self.max_zoom:
            raise ValueError("minZoom must not exceed maxZoom")
        e = self.extent
        if e is not None and not (e[0] < e[2] and e[1] < e[3]):
            raise ValueError("extent must be [minLon, minLat, maxLon, maxLat] with min < max")
        return self


class TileCache(KModel):
    """A MapCache in front of the service: WMTS, TMS, XYZ and tiled WMS, one tileset per dataset."""

    enabled: bool = Field(True, description="Run the tile cache.")
    grids: list[TileGrid] = Field(
        default_factory=lambda: [TileGrid.GoogleMapsCompatible, TileGrid.WGS84],
        min_length=1,
        max_length=2,
        description="Tile grids offered.",
    )
    format: TileFormat = Field(TileFormat.png, description="Tile image format.")
    storage: CacheStorage = Field(default_factory=CacheStorage, description="Where tiles are kept.")
    seed: SeedPolicy | None = Field(None, description="Seed datasets automatically (new or changed).")
    wms: bool = Field(
        False, description="Send WMS clients through the cache (status url points at the tiled WMS)."
    )
    metatile: int = Field(1, ge=1, le=8, description="Metatile size (tiles per side rendered at once).")
    expires: int = Field(3600, ge=0, description="Cache-Control max-age of tile answers, in seconds.")
    replicas: int = Field(1, ge=0, le=100, description="Tile cache pods.")
    image: str | None = Field(
        None,
        max_length=512,
        description="Tile cache image: Apache with mod_mapcache, started as `kms-mapcache-httpd CONFIG` "
        "(default: the operator's KMS_TILES_IMAGE, the chart's own MapCache image).",
    )
    resources: Resources | None = Field(
        None,
        description="Requests/limits of the tile cache container (default: "
        f"{_resources_text(DEFAULT_TILES_RESOURCES)}).",
    )


class NetworkAccess(KModel):
    """The NetworkPolicies the operator creates for the service's pods (where the cluster's network
    plugin enforces NetworkPolicy): MapServer and tile-cache pods accept connections on their port
    only, MapServer pods connect nowhere (DNS and HTTP(S) only when a dataset reads a URL source),
    and tile-cache pods connect only to this service's MapServer pods."""

    enabled: bool = Field(
        True, description="Create the policies (the operator's KMS_NETWORK_POLICIES can turn them off)."
    )
    allow_from: list[NetworkPeer] | None = Field(
        None,
        max_length=32,
        description="Who may connect to the MapServer and tile-cache ports (unset: anyone; e.g. only "
        "the ingress controller's namespace). The facade (thumbnails) may always connect, and the tile "
        "cache to MapServer.",
    )


class MapServiceSpec(KModel):
    """A MapServer deployment serving the MapDatasets its selector picks."""

    dataset_selector: LabelSelector = Field(
        default_factory=LabelSelector,
        description="Label selector over MapDatasets in this namespace; empty selects all.",
    )
    title: str | None = Field(
        None, max_length=500, pattern=SAFE_TEXT, description="Service title (capabilities)."
    )
    abstract: str | None = Field(None, max_length=4000, pattern=SAFE_TEXT, description="Service abstract.")
    image: str | None = Field(
        None,
        max_length=512,
        description="MapServer 8 image (default: the operator's KMS_MAPSERVER_IMAGE, the chart's own "
        f"Apache + mod_fcgid image). {UPSTREAM_IMAGE} works too.",
    )
    image_pull_policy: str = Field(
        "IfNotPresent", pattern=r"^(Always|IfNotPresent|Never)$", description="Pull policy of the image."
    )
    replicas: int = Field(1, ge=0, le=1000, description="Replicas (ignored when autoscaling is set).")
    resources: Resources | None = Field(
        None,
        description="Requests/limits of the MapServer container (default: "
        f"{_resources_text(DEFAULT_MAPSERVER_RESOURCES)}). A CPU limit sets the FastCGI process "
        "count (two per CPU) unless mapserver.processes does.",
    )
    data: DataVolume | None = Field(None, description="Volume with the datasets' files (read-only at /data).")
    ingress: Ingress | None = Field(None, description="Optional Ingress.")
    autoscaling: Autoscaling | None = Field(None, description="Optional HorizontalPodAutoscaler.")
    pod_disruption_budget: DisruptionBudget | None = Field(None, description="Optional PodDisruptionBudget.")
    mapserver: MapServerSettings = Field(default_factory=MapServerSettings, description="MapServer settings.")
    probes: Probes = Field(default_factory=Probes, description="Probe timings.")
    extent: list[float] | None = Field(
        None, min_length=4, max_length=4, description="Map extent in EPSG:4326 (default: union of datasets)."
    )
    tile_cache: TileCache | None = Field(
        None, description="Optional MapCache tile cache in front of MapServer."
    )
    network_policy: NetworkAccess = Field(
        default_factory=NetworkAccess, description="NetworkPolicies of the service's pods."
    )


class TileCacheStatus(KModel):
    url: str | None = Field(None, description="Base URL of the tile cache.")
    wmts: str | None = Field(None, description="WMTS GetCapabilities URL.")
    tms: str | None = Field(None, description="TMS tile URL template ({dataset}, {grid}, {z}, {x}, {y}).")
    xyz: str | None = Field(
        None, description="XYZ tile URL template, y from the top ({dataset}, {z}, {x}, {y})."
    )
    wms: str | None = Field(None, description="Tiled WMS endpoint.")
    config_map: str | None = Field(None, description="ConfigMap holding the MapCache configuration.")
    tilesets: int | None = Field(None, description="Tilesets (datasets) in the cache.")
    ready_replicas: int | None = Field(None, description="Tile cache replicas passing readiness.")


class MapServiceStatus(KModel):
    conditions: list[Condition] | None = Field(
        None,
        description="Ready, Progressing, Degraded, Reconciling (rollout in progress), Stalled (True "
        "when MapServer cannot load the mapfile, the rollout passed its deadline or the children "
        "cannot be applied).",
    )
    observed_generation: int | None = Field(
        None, description="The metadata.generation last reconciled (behind it: work in progress)."
    )
    replicas: int | None = Field(None, description="Desired replicas.")
    ready_replicas: int | None = Field(None, description="Replicas passing readiness.")
    dataset_count: int | None = Field(None, description="Datasets in the mapfile.")
    datasets: list[str] | None = Field(None, description="Names of the MapDatasets served.")
    excluded: list[str] | None = Field(
        None, description="Selected datasets left out (not Ready), with reasons."
    )
    mapfile_hash: str | None = Field(None, description="Content hash of the generated mapfile.")
    config_map: str | None = Field(None, description="ConfigMap holding the mapfile.")
    url: str | None = Field(None, description="WMS endpoint.")
    ogcapi: str | None = Field(
        None,
        description="OGC API - Features landing page (<url><service>/ogcapi; its collections: the served "
        "vector datasets with protocol OGCAPI). Links in its answers are absolute, under this URL.",
    )
    tile_cache: TileCacheStatus | None = Field(None, description="The tile cache, when enabled.")


class MapService(Resource):
    """A MapServer deployment serving the MapDatasets its selector picks."""

    spec: MapServiceSpec
    status: MapServiceStatus | None = status_field()

    crd = ResourceMeta(
        kind="MapService",
        plural="mapservices",
        singular="mapservice",
        short_names=["mss"],
        printer_columns=[
            PrinterColumn(
                name="Ready", type="string", json_path='.status.conditions[?(@.type=="Ready")].status'
            ),
            PrinterColumn(name="Replicas", type="string", json_path=".status.readyReplicas"),
            PrinterColumn(name="Datasets", type="integer", json_path=".status.datasetCount"),
            PrinterColumn(name="Age", type="date", json_path=".metadata.creationTimestamp"),
            PrinterColumn(name="URL", type="string", json_path=".status.url", priority=1),
            PrinterColumn(name="OGC API", type="string", json_path=".status.ogcapi", priority=1),
        ],
    )
