#!/usr/bin/env python3
"""`make dev`: the product as it runs on a cluster, on this machine. The local control plane, a
real kubelet node (hack/node.py) with the images built here (hack/images.py), and the chart
installed into namespace `kube-mapserver` (restricted Pod Security) by hack/install.py: the
operator, the facade, MapServer, tile-cache and job pods all run as real containers.

It prints URLs a browser on this machine can open (Service IPs, routed to the node's bridge),
and each MapService's WMS and tile URLs as services appear. SIGINT, SIGTERM or SIGHUP stops it
all: the node (its pods), then the plane. The state (etcd, images) stays in .kms/ for a warm start.
"""

from __future__ import annotations

import argparse
import signal
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import cluster
import install
import node as node_mod
import sample_data

import images

REPO = Path(__file__).resolve().parent.parent
NAMESPACE = install.NAMESPACE


class Stop(BaseException):
    """A stop signal arrived (SIGINT, SIGTERM, SIGHUP). A BaseException, like KeyboardInterrupt:
    the `except Exception` of a wait loop in the start-up must not swallow it (the signal handler
    ignores further signals, so a swallowed stop would never come again)."""


STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


def _stop(signum: int, _frame: object) -> None:
    # the first signal stops everything; more (a process group gets one each) must not interrupt it
    for sig in STOP_SIGNALS:
        signal.signal(sig, signal.SIG_IGN)
    raise Stop(signal.Signals(signum).name)


def example_map_url(base: str) -> str:
    return (
        f"{base}?SERVICE=WMS&VERSION=1.3.0&REQUEST=GetMap&LAYERS=kms_sst-sample,kms_zones-sample&STYLES="
        "&CRS=EPSG:4326&BBOX=-90,-180,90,180&WIDTH=512&HEIGHT=256&FORMAT=image/png&TRANSPARENT=TRUE"
    )


def service_lines(k: install.Kubectl, seen: dict[str, str]) -> list[str]:
    """URLs of MapServices that are new or changed since the last call (WMS, OGC API, tiles, the map)."""
    lines = []
    items = k.json("get", "mapservices", "-n", NAMESPACE).get("items", [])
    for svc in items:
        name = svc["metadata"]["name"]
        try:
            ip = install.service_ip(k.kubeconfig, NAMESPACE, name)
        except RuntimeError:
            continue  # its Service is not created yet
        base = f"http://{ip}:8080/"
        text = [f"  {name}: WMS {base}?SERVICE=WMS&REQUEST=GetCapabilities"]
        if (svc.get("status") or {}).get("ogcapi"):  # (its links: the in-cluster URL of the status)
            text.append(f"  {name}: OGC API - Features {base}{name}/ogcapi/collections?f=json")
        if (svc.get("spec") or {}).get("tileCache"):
            try:
                tip = install.service_ip(k.kubeconfig, NAMESPACE, f"{name}-tiles")
                text.append(f"  {name}: tiles http://{tip}:8080/wmts?SERVICE=WMTS&REQUEST=GetCapabilities")
                text.append(
                    f"  {name}: XYZ   http://{tip}:8080/gmaps/{{dataset}}@GoogleMapsCompatible/{{z}}/{{x}}/{{y}}.png"
                )
            except RuntimeError:
                pass
        if name == "ocean":
            text.append(f"  map:   {example_map_url(base)}")
        joined = "\n".join(text)
        if seen.get(name) != joined:
            seen[name] = joined
            lines.append(joined)
    return lines


def browser_line(kubeconfig: Path, facade: str) -> str:
    """How a browser on this machine opens /ui/ with the in-cluster service URLs of the status
    resolved to the Services' ClusterIPs (routed here), e.g. Debian's chromium."""
    rules = install.browser_host_rules(kubeconfig, NAMESPACE)
    return f"  ui maps: chromium --host-resolver-rules='{rules}' {facade}/ui/"


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dir", type=Path, default=cluster.DEFAULT_DIR, help="the plane's directory")
    p.add_argument(
        "--state",
        type=Path,
        default=REPO / ".kms",
        help="the node, the data and tile-cache volumes, the admin password (default .kms/)",
    )
    a = p.parse_args()
    for sig in STOP_SIGNALS:
        signal.signal(sig, _stop)
    started = time.monotonic()
    plane = cluster.Plane(a.dir.resolve())
    state = a.state.resolve()
    node = node_mod.Node(state / "node")
    data_root, tiles_root, password_file = state / "data", state / "tile-cache", state / "admin-password"
    try:
        manifest = images.build()
        cluster.up(plane, port=None, timeout=120, real_node=True)
        node_mod.up(node, plane, manifest)
        k = install.Kubectl(plane.kubeconfig)
        # hack/kubectl (this kubeconfig) works in the product's namespace
        k.run("config", "set-context", "--current", f"--namespace={NAMESPACE}")
        sample_data.write_samples(data_root)
        install.install(plane.kubeconfig, manifest, NAMESPACE, data_root, tiles_root)
        password = install.admin_password(plane.kubeconfig, NAMESPACE)
        password_file.write_text(password + "\n")
        password_file.chmod(0o600)
        facade = f"http://{install.service_ip(plane.kubeconfig, NAMESPACE, 'kube-mapserver-api')}"
        print(
            f"\nkube-mapserver dev is up in {time.monotonic() - started:.0f}s "
            f"(real node, namespace {NAMESPACE}).\n"
            f"  kubectl: hack/kubectl get pods        (KUBECONFIG={plane.kubeconfig})\n"
            f"  try:     hack/kubectl apply -f examples/ && hack/kubectl get mapdatasets,mapservices\n"
            f"  facade:  {facade}/docs  (admin, password in {password_file})\n"
            f"  ui:      {facade}/ui/  (layer preview: log in as admin)\n"
            f"  data:    {data_root} (the examples' data volume)\n"
            f"Map services appear below as you create them. Ctrl-C stops everything.\n",
            flush=True,
        )
        seen: dict[str, str] = {}
        while True:
            lines = service_lines(k, seen)
            for line in lines:
                print(line, flush=True)
            if lines:  # the page's maps come from the status URLs: in-cluster names
                print(browser_line(plane.kubeconfig, facade), flush=True)
            if not node_mod.alive(node):
                cluster.log("the node's processes died; stopping")
                return 1
            time.sleep(2)
    except Stop as s:
        cluster.log(f"{s}: stopping")
        return 0
    except (cluster.ClusterError, RuntimeError, TimeoutError, subprocess.CalledProcessError) as e:
        cluster.log(f"ERROR: {e}")
        return 1
    finally:
        # a second signal during the stop must not leave half of it behind
        for sig in STOP_SIGNALS:
            signal.signal(sig, signal.SIG_IGN)
        node_mod.down(node)
        cluster.down(plane)


if __name__ == "__main__":
    sys.exit(main())
