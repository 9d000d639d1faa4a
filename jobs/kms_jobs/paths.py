"""Paths relative to the data root: resolution that never escapes it, and atomic outputs."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path

from pydantic import Field

from kms_crds.common import KModel
from kms_crds.job_params import DataPath, DatasetName

from .result import JobError

DEFAULT_DATA_ROOT = "/data"


class DatasetPaths(KModel):
    """`{"paths": {"<dataset name>": "<relative path>"}}`: datasets resolved to files by the operator."""

    paths: dict[DatasetName, DataPath] = Field(min_length=1, max_length=1000)


class DataRoot:
    """The data volume: every path the job touches is relative to it and must stay inside it."""

    def __init__(self, root: str | os.PathLike[str]):
        path = Path(root)
        if not path.is_dir():
            raise JobError(f"data root {str(path)!r} does not exist or is not a directory")
        self.root = path.resolve()

    def resolve(self, rel: str) -> Path:
        """The real path (symlinks followed) of `rel`; JobError if it is not inside the data root."""
        parts = rel.replace("\\", "/").split("/")
        if not rel or rel.startswith(("/", "\\")) or "\x00" in rel or ".." in parts:
            raise JobError(f"path {rel!r} is outside the data root (paths must be relative, without '..')")
        real = (self.root / rel).resolve()
        if real != self.root and self.root not in real.parents:
            raise JobError(f"path {rel!r} is outside the data root (it resolves to {str(real)!r})")
        return real

    def relative(self, real: Path) -> str:
        """`real` (inside the root) as a path relative to the root."""
        return real.relative_to(self.root).as_posix()

    def input_file(self, rel: str, what: str = "input") -> Path:
        """An existing regular file to read."""
        real = self.resolve(rel)
        if not real.exists():
            raise JobError(f"{what} file {rel!r} does not exist")
        if not real.is_file():
            raise JobError(f"{what} {rel!r} is not a regular file")
        return real

    def input_dir(self, rel: str, what: str = "input") -> Path:
        real = self.resolve(rel)
        if not real.is_dir():
            raise JobError(f"{what} directory {rel!r} does not exist or is not a directory")
        return real

    def output_file(self, rel: str) -> Path:
        """Where to write an output (its parent directories are created by `atomic_output`)."""
        real = self.resolve(rel)
        if real == self.root or real.is_dir():
            raise JobError(f"output {rel!r} is a directory")
        return real


@contextlib.contextmanager
def atomic_output(final: Path) -> Iterator[Path]:
    """Yield a temporary path next to `final` (`<final>.tmp-<pid>`); on success move it into place with
    os.replace, on failure remove it, so a half-written output never appears under the final name."""
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = final.with_name(f"{final.name}.tmp-{os.getpid()}")
    try:
        yield tmp
        os.replace(tmp, final)
    finally:
        for leftover in (tmp, tmp.with_name(tmp.name + ".aux.xml"), tmp.with_name(tmp.name + ".ovr")):
            with contextlib.suppress(FileNotFoundError):
                leftover.unlink()
