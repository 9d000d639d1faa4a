"""hyspex-variants: which HySpex scenes of a campaign lack their RGB or Z variant, and whether the
missing variant's file is already on disk next to the existing one."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Literal

from pydantic import Field

from kms_crds.common import SAFE_TEXT, KModel
from kms_crds.job_params import DataPath, DatasetName

from .paths import DataRoot
from .result import Logger

VARIANTS = ("RGB", "Z")
# a trailing variant token: scene1_rgb, scene1-RGB, scene1_z, scene1-Z
_TOKEN = re.compile(r"^(?P<base>.*?)[_-](?P<variant>rgb|z)$", re.IGNORECASE)


class HyspexDataset(KModel):
    name: DatasetName
    identifier: str | None = Field(None, min_length=1, max_length=200)
    variant: Literal["RGB", "Z"] | None = None
    path: DataPath | None = None


class HyspexParams(KModel):
    campaign: str = Field(min_length=1, max_length=200, pattern=SAFE_TEXT)
    datasets: list[HyspexDataset] = Field(max_length=10000)


def split_variant(text: str) -> tuple[str, str | None]:
    """("scene1", "RGB") for "scene1_rgb"; (text, None) without a variant suffix."""
    m = _TOKEN.match(text)
    return (m["base"], m["variant"].upper()) if m else (text, None)


def _stem_ext(name: str) -> tuple[str, str]:
    stem, dot, ext = name.rpartition(".")
    return (stem, ext) if dot and stem else (name, "")


def find_candidate(root: DataRoot, existing: str, missing: str) -> str | None:
    """The file next to `existing` (relative path) named like it with the variant token swapped to
    `missing`, e.g. scene1_rgb.tif -> scene1_z.tif / scene1-Z.tif (case-insensitive)."""
    stem, ext = _stem_ext(Path(existing).name)
    base, variant = split_variant(stem)
    if variant is None:
        return None
    real = root.resolve(existing)
    if not real.parent.is_dir():
        return None
    matches = []
    for entry in sorted(real.parent.iterdir()):
        e_stem, e_ext = _stem_ext(entry.name)
        e_base, e_variant = split_variant(e_stem)
        if e_variant == missing and e_base.lower() == base.lower() and e_ext.lower() == ext.lower():
            rel = (Path(existing).parent / entry.name).as_posix()
            if root.resolve(rel).is_file():  # a link pointing outside the data root is refused
                matches.append(rel)
    return matches[0] if matches else None


def run(params: HyspexParams, root: DataRoot, log: Logger) -> dict[str, Any]:
    scenes: dict[str, dict[str, HyspexDataset]] = {}
    unclassified = []
    for ds in params.datasets:
        scene, suffix = split_variant(ds.identifier or ds.name)
        variant = ds.variant or suffix
        if variant is None:
            unclassified.append(ds.name)
            continue
        scenes.setdefault(scene, {}).setdefault(variant, ds)
    missing = []
    for scene in sorted(scenes):
        have = scenes[scene]
        for variant in VARIANTS:
            if variant in have:
                continue
            other = next(have[v] for v in VARIANTS if v in have)
            candidate = find_candidate(root, other.path, variant) if other.path else None
            missing.append(
                {"scene": scene, "missing": variant, "dataset": other.name, "candidate": candidate}
            )
    complete = len(scenes) - len({m["scene"] for m in missing})
    log.info("checked campaign", campaign=params.campaign, scenes=len(scenes), complete=complete)
    result: dict[str, Any] = {
        "campaign": params.campaign,
        "scenes": len(scenes),
        "complete": complete,
        "missing": missing,
    }
    if unclassified:
        result["unclassified"] = sorted(unclassified)
    return result
