"""Style previews: the layer the operator would generate for a dataset spec, rendered by MapServer.

The operator's own code does the work as library calls: `inspect_source` (data-root confinement,
allow-lists, GDAL) and `build_mapfile`. The render is a WMS GetMap through Debian's `mapserv` (the
code path of a MapServer pod's GetMap, so the pixels are the ones the service will serve), run as
a separate process under a wall-clock timeout and rlimits (CPU seconds, address space): a render
that hangs or grows is killed, not the facade."""

from __future__ import annotations

import html
import math
import re
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlencode

from kms_crds.mapdataset import MapDatasetSpec, MapDatasetStatus
from kms_crds.mapservice import MapServiceSpec
from kms_operator.inspect_source import InspectError, inspect_source
from kms_operator.mapfile import DATA_MOUNT, DatasetInput, build_config, build_mapfile, layer_name
from kms_operator.settings import Settings as InspectSettings

from .errors import Problem

SERVICE = "preview"
DEFAULT_SIDE = 512
MAPSERV = "mapserv"
_FIELD_OF_REASON = {"SourceLayerNotFound": "source.layer", "SourceURLNotAllowed": "source.url"}
_ERROR_LINE = re.compile(r"^\s*(ms\w+\(\)|GDAL|OGR|PROJ).*$")


@dataclass(frozen=True)
class Limits:
    timeout: float = 10.0
    cpu_seconds: int = 10
    memory_mb: int = 512


def inspect(
    name: str, spec: MapDatasetSpec, data_root: Path, roots: list[str], hosts: list[str]
) -> DatasetInput:
    """The dataset as the operator would see it: the same checks and inspection, and the status
    round-tripped through its wire form as the operator reads it back from the CR."""
    settings = InspectSettings(data_root=data_root, allowed_roots=list(roots), allowed_url_hosts=list(hosts))
    try:
        insp = inspect_source(spec, settings)
    except InspectError as e:
        field = _FIELD_OF_REASON.get(e.reason) or ("source.path" if spec.source.path else "source.url")
        raise Problem(422, f"{e.reason}: {e.message}", field) from None
    status = insp.status(layer_name(spec.identifier))
    return DatasetInput(name, spec, MapDatasetStatus.model_validate(status.wire()))


def mapfile(ds: DatasetInput, data_root: str = DATA_MOUNT) -> str:
    """The mapfile of a service serving only this dataset (data paths as the pods see them)."""
    try:
        return build_mapfile(SERVICE, MapServiceSpec(), [ds], data_root=data_root)
    except ValueError as e:  # e.g. a number MapServer cannot take
        raise Problem(422, f"the layer cannot be written: {e}", "style") from None


def frame(
    ds: DatasetInput,
    bbox: list[float] | None,
    width: int | None,
    height: int | None,
    max_size: int,
) -> tuple[list[float], int, int]:
    """The area (EPSG:4326, minx miny maxx maxy) and image size: the dataset's extent and 512 px
    on the longer side unless asked; the other side follows the area's aspect."""
    if bbox is None:
        bbox = ds.status.wgs84_bbox
        if not bbox:
            raise Problem(422, "the source has no extent in EPSG:4326: give bbox", "bbox")
    if len(bbox) != 4 or not all(math.isfinite(v) for v in bbox):
        raise Problem(422, "bbox must be four finite numbers: minx,miny,maxx,maxy", "bbox")
    minx, miny, maxx, maxy = bbox
    if not (minx < maxx and miny < maxy) or not math.isfinite((maxy - miny) / (maxx - minx)):
        raise Problem(422, "bbox must be minx,miny,maxx,maxy with min < max", "bbox")
    aspect = (maxy - miny) / (maxx - minx)
    if width is None and height is None:
        if aspect <= 1:
            width, height = DEFAULT_SIDE, round(DEFAULT_SIDE * aspect)
        else:
            width, height = round(DEFAULT_SIDE / aspect), DEFAULT_SIDE
    elif height is None:
        height = min(round(width * aspect), 10**6)
    elif width is None:
        width = min(round(height / aspect), 10**6)
    width, height = max(1, int(width)), max(1, int(height))
    for field, side in (("width", width), ("height", height)):
        if side > max_size:
            raise Problem(422, f"{field} {side} exceeds the preview limit of {max_size} pixels", field)
    return [float(v) for v in bbox], width, height


def getmap_params(layer: str, bbox: list[float], width: int, height: int) -> dict[str, str]:
    """WMS 1.3.0 GetMap in EPSG:4326 (axis order latitude, longitude), PNG with transparency."""
    minx, miny, maxx, maxy = bbox
    return {
        "SERVICE": "WMS",
        "VERSION": "1.3.0",
        "REQUEST": "GetMap",
        "LAYERS": layer,
        "STYLES": "",
        "CRS": "EPSG:4326",
        "BBOX": f"{miny!r},{minx!r},{maxy!r},{maxx!r}",
        "WIDTH": str(width),
        "HEIGHT": str(height),
        "FORMAT": "image/png",
        "TRANSPARENT": "TRUE",
    }


def getmap_query(layer: str, bbox: list[float], width: int, height: int) -> str:
    """getmap_params as a query string (mapserv's QUERY_STRING)."""
    return urlencode(getmap_params(layer, bbox, width, height))


def error_line(stdout: bytes, stderr: bytes, returncode: int = 0) -> str:
    """MapServer's own words: the first error line it logged (the cause comes first), else the text
    of its ServiceException, else the last thing it wrote to stderr."""
    err = stderr.decode(errors="replace").splitlines()
    for line in err:
        if _ERROR_LINE.match(line):
            return line.strip()[:500]
    m = re.search(rb"<ServiceException[^>]*>(.*?)</ServiceException>", stdout, re.S)
    if m:
        lines = [ln.strip() for ln in html.unescape(m.group(1).decode(errors="replace")).splitlines()]
        if any(lines):
            return [ln for ln in lines if ln][-1][:500]
    tail = [ln.strip() for ln in err if ln.strip()]
    if tail:
        return tail[-1][:500]
    return f"mapserv exited with status {returncode} and no image"


def _command(limits: Limits) -> list[str]:
    mapserv = shutil.which(MAPSERV) or shutil.which(MAPSERV, path="/usr/bin:/usr/lib/cgi-bin")
    if mapserv is None:
        raise Problem(503, "previews need MapServer's mapserv (Debian package mapserver-bin) on the facade")
    prlimit = shutil.which("prlimit")
    if prlimit is None:
        return [mapserv]
    return [prlimit, f"--cpu={limits.cpu_seconds}", f"--as={limits.memory_mb * 1024 * 1024}", mapserv]


def render(map_text: str, layer: str, bbox: list[float], width: int, height: int, limits: Limits) -> bytes:
    """A PNG from mapserv (a WMS GetMap as a CGI call) in a private temporary directory; a mapfile or
    layer MapServer cannot load or draw → 422 with MapServer's error line."""
    cmd = _command(limits)
    with tempfile.TemporaryDirectory(prefix="kms-preview-") as tmp:
        map_path, conf_path = Path(tmp, "preview.map"), Path(tmp, "mapserver.conf")
        map_path.write_text(map_text)
        conf_path.write_text(build_config(SERVICE, str(map_path)))
        env = {
            "PATH": "/usr/bin:/bin",
            "HOME": tmp,
            "CPL_TMPDIR": tmp,
            "GDAL_HTTP_TIMEOUT": "10",
            "MAPSERVER_CONFIG_FILE": str(conf_path),
            "MS_MAPFILE": str(map_path),
            "REQUEST_METHOD": "GET",
            "QUERY_STRING": getmap_query(layer, bbox, width, height),
        }
        try:
            done = subprocess.run(cmd, env=env, cwd=tmp, capture_output=True, timeout=limits.timeout)
        except subprocess.TimeoutExpired:
            raise Problem(422, f"the preview did not render within {limits.timeout:g} s", "style") from None
    head, sep, body = done.stdout.partition(b"\r\n\r\n")
    if done.returncode == 0 and sep and b"image/png" in head.lower() and body.startswith(b"\x89PNG"):
        return body
    if done.returncode < 0:
        why = f"the render was stopped by signal {-done.returncode} (CPU or memory limit)"
        raise Problem(422, why, "style")
    raise Problem(
        422,
        f"MapServer cannot render the layer: {error_line(done.stdout, done.stderr, done.returncode)}",
        "style",
    )
