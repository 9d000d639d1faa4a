"""MapCache's predefined tile grids and how many tiles a seed covers.

Pure Python (no GDAL): the facade and the operator import it to size cache-seed jobs. The numbers are
MapCache's own (lib/configuration.c, lib/grid.c): `tile_count` follows `mapcache_grid_compute_limits`
with tolerance 0, which is what `mapcache_seed -e` seeds with 1x1 metatiles."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

GridName = Literal["GoogleMapsCompatible", "WGS84"]

EARTH_RADIUS = 6378137.0  # EPSG:3857 sphere
MERCATOR_MAX = 20037508.3427892480  # MapCache's GoogleMapsCompatible half-extent
MERCATOR_MAX_LAT = math.degrees(2 * math.atan(math.exp(math.pi)) - math.pi / 2)  # 85.0511287798...
EPSILON = 0.0000001  # as in mapcache_grid_compute_limits

GOOGLE_RESOLUTIONS = (
    156543.0339280410,
    78271.51696402048,
    39135.75848201023,
    19567.87924100512,
    9783.939620502561,
    4891.969810251280,
    2445.984905125640,
    1222.992452562820,
    611.4962262814100,
    305.7481131407048,
    152.8740565703525,
    76.43702828517624,
    38.21851414258813,
    19.10925707129406,
    9.554628535647032,
    4.777314267823516,
    2.388657133911758,
    1.194328566955879,
    0.5971642834779395,
)
WGS84_RESOLUTIONS = tuple(0.703125 / 2**z for z in range(18))

Extent = tuple[float, float, float, float]


@dataclass(frozen=True)
class TileGrid:
    """A MapCache grid: origin bottom-left, `tile_size` px square tiles, one resolution per zoom level."""

    name: str
    srs: str
    extent: Extent
    tile_size: int
    resolutions: tuple[float, ...]

    @property
    def max_zoom(self) -> int:
        return len(self.resolutions) - 1

    def _unit(self, z: int) -> float:
        if not 0 <= z <= self.max_zoom:
            raise ValueError(f"zoom {z} is outside 0..{self.max_zoom} for grid {self.name}")
        return self.tile_size * self.resolutions[z]

    def matrix_size(self, z: int) -> tuple[int, int]:
        """Tiles across and down at level `z`."""
        unit = self._unit(z)
        minx, miny, maxx, maxy = self.extent
        return (
            math.ceil((maxx - minx - 0.01 * unit) / unit),
            math.ceil((maxy - miny - 0.01 * unit) / unit),
        )

    def limits(self, z: int, extent: Extent | None = None) -> tuple[int, int, int, int]:
        """`(minx, miny, maxx, maxy)` tile indexes (max exclusive, y from the bottom) covering `extent`
        (in the grid's SRS; None = the whole grid) at level `z`."""
        cols, rows = self.matrix_size(z)
        if extent is None:
            return 0, 0, cols, rows
        unit = self._unit(z)
        gx, gy = self.extent[0], self.extent[1]
        minx = max(math.floor((extent[0] - gx) / unit + EPSILON), 0)
        maxx = min(math.ceil((extent[2] - gx) / unit - EPSILON), cols)
        miny = max(math.floor((extent[1] - gy) / unit + EPSILON), 0)
        maxy = min(math.ceil((extent[3] - gy) / unit - EPSILON), rows)
        return minx, miny, maxx, maxy

    def from_wgs84(self, extent: Sequence[float]) -> Extent:
        """`[minlon, minlat, maxlon, maxlat]` in this grid's SRS (latitudes clamped for Web Mercator)."""
        minlon, minlat, maxlon, maxlat = validate_wgs84_extent(extent)
        if self.srs == "EPSG:4326":
            return minlon, minlat, maxlon, maxlat
        x0, y0 = lonlat_to_mercator(minlon, minlat)
        x1, y1 = lonlat_to_mercator(maxlon, maxlat)
        return x0, y0, x1, y1


GRIDS: dict[str, TileGrid] = {
    "GoogleMapsCompatible": TileGrid(
        "GoogleMapsCompatible",
        "EPSG:3857",
        (-MERCATOR_MAX, -MERCATOR_MAX, MERCATOR_MAX, MERCATOR_MAX),
        256,
        GOOGLE_RESOLUTIONS,
    ),
    "WGS84": TileGrid("WGS84", "EPSG:4326", (-180.0, -90.0, 180.0, 90.0), 256, WGS84_RESOLUTIONS),
}


def grid(name: str) -> TileGrid:
    try:
        return GRIDS[name]
    except KeyError:
        raise ValueError(f"unknown grid {name!r} (known: {', '.join(GRIDS)})") from None


def validate_wgs84_extent(extent: Sequence[float]) -> Extent:
    """`extent` as a tuple if it is `[minlon, minlat, maxlon, maxlat]` with min < max inside -180..180 /
    -90..90 (finite numbers); ValueError otherwise."""
    if len(extent) != 4:
        raise ValueError("extent must be [minlon, minlat, maxlon, maxlat]")
    minlon, minlat, maxlon, maxlat = (float(v) for v in extent)
    if not all(math.isfinite(v) for v in (minlon, minlat, maxlon, maxlat)):
        raise ValueError("extent values must be finite numbers")
    if not (-180 <= minlon < maxlon <= 180 and -90 <= minlat < maxlat <= 90):
        raise ValueError(
            "extent must be [minlon, minlat, maxlon, maxlat] with minlon < maxlon in -180..180 "
            "and minlat < maxlat in -90..90"
        )
    return minlon, minlat, maxlon, maxlat


def lonlat_to_mercator(lon: float, lat: float) -> tuple[float, float]:
    """EPSG:4326 degrees to EPSG:3857 metres; latitudes beyond the Web Mercator limit are clamped."""
    lat = max(-MERCATOR_MAX_LAT, min(MERCATOR_MAX_LAT, lat))
    x = EARTH_RADIUS * math.radians(lon)
    y = EARTH_RADIUS * math.log(math.tan(math.pi / 4 + math.radians(lat) / 2))
    return x, y


def tile_count(
    grid_name: str, min_zoom: int, max_zoom: int, extent_wgs84: Sequence[float] | None = None
) -> int:
    """Tiles of `grid_name` in levels `min_zoom..max_zoom` covering `extent_wgs84` (None = the whole grid),
    i.e. what `mapcache_seed -g <grid> -z min,max [-e ...]` seeds with 1x1 metatiles."""
    g = grid(grid_name)
    if not 0 <= min_zoom <= max_zoom <= g.max_zoom:
        raise ValueError(f"zoom levels must satisfy 0 <= minZoom <= maxZoom <= {g.max_zoom} for {g.name}")
    extent = g.from_wgs84(extent_wgs84) if extent_wgs84 is not None else None
    total = 0
    for z in range(min_zoom, max_zoom + 1):
        minx, miny, maxx, maxy = g.limits(z, extent)
        total += max(maxx - minx, 0) * max(maxy - miny, 0)
    return total
