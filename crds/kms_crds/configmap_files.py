"""Files in a ConfigMap, plain or gzipped: a ConfigMap holds at most 1 MiB, so a large file (a
mapfile of thousands of layers, a tile cache configuration) is stored gzipped in binaryData as
`<name>.gz`. Shared by the operator (which writes them) and the facade (which reads them)."""

from __future__ import annotations

import base64
import gzip
from collections.abc import Mapping

MAX_PLAIN = 256 * 1024  # bytes: above this a file is stored gzipped (about 10x smaller)
MAPFILE = "service.map"  # the mapfile in a MapService's mapfile ConfigMap (<service>-mapfile-<hash>)


def put_file(configmap: dict, name: str, text: str, max_plain: int = MAX_PLAIN) -> None:
    """Add file `name` to the ConfigMap: in data, or gzipped in binaryData when larger than max_plain."""
    raw = text.encode()
    if len(raw) > max_plain:
        packed = base64.b64encode(gzip.compress(raw, 6, mtime=0)).decode()
        configmap.setdefault("binaryData", {})[name + ".gz"] = packed
    else:
        configmap.setdefault("data", {})[name] = text


def read_file(data: Mapping | None, binary_data: Mapping | None, name: str) -> str | None:
    """File `name` of a ConfigMap's data / binaryData, plain or gzipped (the inverse of put_file)."""
    if binary_data and name + ".gz" in binary_data:
        return gzip.decompress(base64.b64decode(binary_data[name + ".gz"])).decode()
    return (data or {}).get(name)


def is_gzipped(configmap: Mapping, name: str) -> bool:
    return name + ".gz" in (configmap.get("binaryData") or {})


def read_mapfile(configmap: Mapping) -> str | None:
    """The mapfile text of a MapService's mapfile ConfigMap (as read from the API)."""
    return read_file(configmap.get("data"), configmap.get("binaryData"), MAPFILE)
