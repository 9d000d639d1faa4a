"""hack/png_coverage.py (the smoke walk's pixel check, standard library only) against GDAL's PNGs."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from osgeo import gdal

from tests.helpers import REPO, hack_module

gdal.UseExceptions()


def _png(path: Path, arr: np.ndarray, palette: bool = False) -> Path:
    mem = gdal.GetDriverByName("MEM").Create("", arr.shape[1], arr.shape[0], arr.shape[2], gdal.GDT_Byte)
    for b in range(arr.shape[2]):
        mem.GetRasterBand(b + 1).WriteArray(arr[..., b])
    if palette:
        table = gdal.ColorTable()
        for i in range(256):
            table.SetColorEntry(i, (i, 255 - i, 7, 0 if i == 0 else 255))
        mem.GetRasterBand(1).SetRasterColorTable(table)
    gdal.GetDriverByName("PNG").CreateCopy(str(path), mem)
    return path


def test_pixels_decode_exactly(tmp_path: Path) -> None:
    arr = np.random.default_rng(7).integers(0, 256, (37, 53, 4), dtype=np.uint8)
    px = hack_module("png_coverage").pixels(_png(tmp_path / "rgba.png", arr).read_bytes())
    assert px == [tuple(int(v) for v in arr[y, x]) for y in range(37) for x in range(53)]
    pal = np.arange(64, dtype=np.uint8).reshape(8, 8, 1)
    px = hack_module("png_coverage").pixels(_png(tmp_path / "pal.png", pal, palette=True).read_bytes())
    assert px[0] == (0, 255, 7, 0) and px[9] == (9, 246, 7, 255)


@pytest.mark.parametrize(
    ("image", "ok"),
    [
        (np.random.default_rng(1).integers(0, 256, (20, 20, 4), dtype=np.uint8) | 1, True),
        (np.zeros((20, 20, 4), np.uint8), False),  # fully transparent
        (np.full((20, 20, 3), 200, np.uint8), False),  # one flat opaque colour
    ],
    ids=["drawn", "blank", "flat"],
)
def test_blank_and_flat_images_fail(tmp_path: Path, image: np.ndarray, ok: bool) -> None:
    path = _png(tmp_path / "x.png", image)
    r = subprocess.run(
        [sys.executable, str(REPO / "hack" / "png_coverage.py"), str(path), "0.5"], check=False
    )
    assert (r.returncode == 0) is ok
