"""POST /datasets/preview latency: the example raster spec rendered through the facade (dry-run
create at the apiserver, GDAL inspection, mapfile, one `mapserv` process per render), p50/p95 of
sequential requests, for the PNG and for `format=mapfile`. Part of the api phase of `make bench`;
alone it starts a plane of its own (no operator, no real node: previews need neither):

    .venv/bin/python -m bench.preview_bench [--requests 40] [--json bench/results/preview.json]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import httpx
import yaml

from bench.common import REPO, Plane, dump, log, sample_data, summary

PNG_P50_TARGET_MS = 500  # one render of 512x256 px; a mapserv process start is most of it


def example_body() -> dict:
    doc = yaml.safe_load((REPO / "examples" / "raster-dataset.yaml").read_text())
    return {"id": doc["metadata"]["name"], **doc["spec"]}


def preview_latency(url: str, token: str, requests: int = 40) -> dict:
    """Sequential previews (ms): PNG at the default size, and the mapfile text."""
    body = example_body()
    out: dict = {"requests_each": requests}
    with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {token}"}, timeout=60) as c:
        for label, params in (("png", {}), ("mapfile", {"format": "mapfile"})):
            for _ in range(3):  # warm-up
                c.post("/datasets/preview", params=params, json=body)
            times = []
            for _ in range(requests):
                t = time.perf_counter()
                r = c.post("/datasets/preview", params=params, json=body)
                times.append((time.perf_counter() - t) * 1000)
                if r.status_code != 200:
                    raise RuntimeError(
                        f"POST /datasets/preview ({label}): HTTP {r.status_code}: {r.text[:300]}"
                    )
            out[label] = summary(times)
            log(f"  preview {label}: p50 {out[label]['p50']:.1f} ms, p95 {out[label]['p95']:.1f} ms")
    return out


def verdict_rows(r: dict) -> list[tuple[str, str, str, bool | None]]:
    png, text = r["png"], r["mapfile"]
    return [
        (
            "facade POST /datasets/preview PNG 512x256 p50 / p95",
            f"{png['p50']:.0f} / {png['p95']:.0f} ms",
            f"p50 <= {PNG_P50_TARGET_MS} ms",
            png["p50"] <= PNG_P50_TARGET_MS,
        ),
        (
            "facade POST /datasets/preview?format=mapfile p50 / p95",
            f"{text['p50']:.0f} / {text['p95']:.0f} ms",
            "-",
            None,
        ),
    ]


def main() -> int:
    from bench.api_bench import Facade, print_rows

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--requests", type=int, default=40)
    p.add_argument("--json", type=Path, help="write the figures here too")
    a = p.parse_args()
    work = Path(tempfile.mkdtemp(prefix="kms-preview-bench-"))
    data_root = work / "data"
    sample_data.write_samples(data_root)
    plane = Plane(work)
    try:
        ns = plane.namespace("preview-bench")
        fac = Facade(plane.kubeconfig, ns, data_root, work / "facade.log")
        fac.add_user("editor", "editor")
        try:
            fac.start()
            result = preview_latency(fac.url, fac.token("editor"), a.requests)
        finally:
            fac.stop()
    finally:
        plane.down()
    result["when"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    print(json.dumps(result, indent=2))
    print_rows(verdict_rows(result))
    if a.json:
        dump(a.json, result)
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(REPO))
    sys.exit(main())
