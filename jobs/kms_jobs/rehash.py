"""rehash: sha256 of datasets' files, or of every regular file under a directory."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pydantic import Field, model_validator

from kms_crds.common import KModel
from kms_crds.job_params import DataPath, DatasetName

from .paths import DataRoot
from .result import JobError, Logger

CHUNK = 1 << 20


class RehashParams(KModel):
    """Exactly one of `paths` (dataset name -> file, resolved by the operator) or `pathPrefix`."""

    paths: dict[DatasetName, DataPath] | None = Field(None, min_length=1, max_length=1000)
    path_prefix: DataPath | None = None

    @model_validator(mode="after")
    def _exactly_one(self) -> RehashParams:
        if (self.paths is None) == (self.path_prefix is None):
            raise ValueError("rehash needs exactly one of paths or pathPrefix")
        return self


def sha256_file(path: Path, on_chunk: Callable[[int], None] | None = None) -> str:
    """`sha256:<hex>` of a file, read in 1 MiB chunks (`on_chunk` gets each chunk's length)."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(CHUNK):
            digest.update(chunk)
            if on_chunk:
                on_chunk(len(chunk))
    return f"sha256:{digest.hexdigest()}"


def _files_under(root: DataRoot, prefix: str) -> dict[str, Path]:
    """Every regular file under `prefix` (recursively, sorted), keyed by its path relative to the root."""
    top = root.input_dir(prefix, "pathPrefix")
    found: dict[str, Path] = {}
    for dirpath, dirnames, filenames in os.walk(top):
        dirnames.sort()
        for name in sorted(filenames):
            rel = (Path(dirpath) / name).relative_to(root.root).as_posix()
            real = root.resolve(rel)  # a symlink pointing outside the data root is refused
            if real.is_file():
                found[rel] = real
    return dict(sorted(found.items()))


def run(params: RehashParams, root: DataRoot, log: Logger) -> dict[str, Any]:
    if params.paths is not None:
        files = {name: root.input_file(rel, f"dataset {name}") for name, rel in params.paths.items()}
    else:
        assert params.path_prefix is not None
        files = _files_under(root, params.path_prefix)
        if not files:
            raise JobError(f"no files under {params.path_prefix!r}")
    total = sum(p.stat().st_size for p in files.values()) or 1
    done, progress = 0, log.progress("hashing")

    def advance(n: int) -> None:
        nonlocal done
        done += n
        progress(min(done / total, 1.0))

    checksums = {key: sha256_file(path, advance) for key, path in files.items()}
    progress(1.0)
    return {"count": len(checksums), "checksums": checksums}
