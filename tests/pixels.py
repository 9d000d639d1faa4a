"""One check for rendered images (GetMap answers, tiles, thumbnails): decoded pixels, not a PNG
signature. `drawn()` fails on a blank or fully transparent image and on wrong colours at known points."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
from osgeo import gdal


def rgba(image: bytes) -> np.ndarray:
    """Any GDAL-readable image (PNG, JPEG) as an HxWx4 uint8 array (opaque alpha added if absent)."""
    path = f"/vsimem/pixels-{id(image)}"
    gdal.FileFromMemBuffer(path, image)
    try:
        ds = gdal.Open(path)
        assert ds is not None, f"not an image GDAL can read: {image[:120]!r}"
        arr = np.stack([ds.GetRasterBand(i + 1).ReadAsArray() for i in range(ds.RasterCount)], axis=-1)
    finally:
        gdal.Unlink(path)
    if arr.shape[-1] == 1:  # grey
        arr = np.concatenate([arr, arr, arr], axis=-1)
    if arr.shape[-1] == 3:
        arr = np.concatenate([arr, np.full((*arr.shape[:2], 1), 255, dtype=arr.dtype)], axis=-1)
    return arr.astype(np.uint8)


def hex_rgb(colour: str) -> tuple[int, int, int]:
    c = colour.lstrip("#")
    return int(c[0:2], 16), int(c[2:4], 16), int(c[4:6], 16)


def drawn(
    image: bytes | np.ndarray,
    min_coverage: float = 0.01,
    at: Mapping[tuple[int, int], tuple[int, int, int] | str | None] | None = None,
    tolerance: int = 40,
) -> np.ndarray:
    """Assert the image shows something: at least `min_coverage` of its pixels are non-transparent
    and not all pixels are one colour; each `at[(x, y)]` is that RGB (or '#rrggbb') within
    `tolerance` per channel, or transparent when None. Returns the RGBA array."""
    arr = image if isinstance(image, np.ndarray) else rgba(image)
    h, w = arr.shape[:2]
    opaque = arr[..., 3] > 0
    coverage = float(opaque.mean())
    assert coverage >= min_coverage, f"image {w}x{h} is blank: {coverage:.2%} non-transparent pixels"
    if coverage == 1.0:  # an opaque image must show more than one flat fill colour
        visible = arr[..., :3].reshape(-1, 3)
        assert (visible != visible[0]).any(), f"image {w}x{h} is one flat colour {visible[0].tolist()}"
    for (x, y), want in (at or {}).items():
        px = arr[y, x]
        if want is None:
            assert px[3] == 0, f"pixel ({x},{y}) should be transparent, is {px.tolist()}"
            continue
        rgb = hex_rgb(want) if isinstance(want, str) else want
        assert px[3] > 0, f"pixel ({x},{y}) is transparent, expected {rgb}"
        diff = np.abs(px[:3].astype(int) - np.array(rgb)).max()
        assert diff <= tolerance, f"pixel ({x},{y}) is {px[:3].tolist()}, expected {list(rgb)} (±{tolerance})"
    return arr
