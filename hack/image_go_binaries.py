"""The static Go binaries of the scratch images (pause from images/pause, CoreDNS from the Go
module proxy) and the build context folders they are staged in."""

from __future__ import annotations

import shutil
from pathlib import Path

from image_common import IMAGES, cache_dir, log, run

COREDNS_VERSION = "v1.15.0"


def build_pause_binary(out: Path, logfile: Path) -> None:
    """images/pause/main.go -> a static, stripped binary at out."""
    run(
        ["go", "build", "-trimpath", "-ldflags", "-s -w", "-o", str(out), "."],
        step="go build pause",
        logfile=logfile,
        cwd=IMAGES / "pause",
        env={"CGO_ENABLED": "0", "GOTOOLCHAIN": "local", "GOWORK": "off"},
    )


def coredns_binary(logfile: Path) -> Path:
    """CoreDNS COREDNS_VERSION from the Go module proxy, cached in $CACHE/bin/coredns-<version>/."""
    final = cache_dir() / "bin" / f"coredns-{COREDNS_VERSION}"
    binary = final / "coredns"
    if binary.exists():
        return binary
    tmp = final.with_name(final.name + ".tmp")
    tmp.mkdir(parents=True, exist_ok=True)
    log(f"building CoreDNS {COREDNS_VERSION} from the Go module proxy (a few minutes)")
    run(
        [
            "go",
            "install",
            "-trimpath",
            "-ldflags",
            "-s -w",
            f"github.com/coredns/coredns@{COREDNS_VERSION}",
        ],
        step="go install coredns",
        logfile=logfile,
        cwd=tmp,
        env={"CGO_ENABLED": "0", "GOTOOLCHAIN": "local", "GOBIN": str(tmp), "GOWORK": "off"},
    )
    if final.exists():
        shutil.rmtree(final)
    tmp.rename(final)
    return binary


def _stage(context: Path, files: dict[str, Path]) -> Path:
    """A fresh build context folder holding the given files."""
    if context.exists():
        shutil.rmtree(context)
    context.mkdir(parents=True)
    for name, src in files.items():
        shutil.copy2(src, context / name)
    return context
