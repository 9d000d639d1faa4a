#!/usr/bin/env python3
"""Local tile caches for the kwok plane: for every MapService tile cache Deployment the operator
made (`<service>-tiles`), run real MapCache (kms_tiles: FastCGI workers) with the configuration its
pods would mount, on loopback.

    hack/local_tilecache.py [--kubeconfig PATH] [--port 8089] [--state-dir DIR]
    GET http://127.0.0.1:8089/<namespace>/<service>/gmaps/<dataset>@GoogleMapsCompatible/{z}/{x}/{y}.png

Pod IPs of the local plane are fake, so this stands in for the tile cache pods. The configuration is
used as generated; only the cache volume (/var/cache/mapcache) is mapped onto the hostPath of the
PV behind it (the same directory seeding jobs write through hack/local_runner.py), or onto a
directory under --state-dir for an emptyDir cache."""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import signal
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path
from urllib.parse import urlsplit
from xml.etree import ElementTree

from kubernetes import client, config, watch
from local_runner import host_path_of  # hack/ is on sys.path when run as a script

from kms_operator.tilecache import CACHE_ROOT, CONFIG_FILE, configmap_file
from kms_tiles.pool import MapCachePool
from kms_tiles.server import TileServer, make_handler

log = logging.getLogger("local-tilecache")
GROUP, VERSION = "maps.kube-mapserver.io", "v1alpha1"
SELECTOR = "app.kubernetes.io/name=mapcache,app.kubernetes.io/managed-by=kube-mapserver-operator"


class Caches:
    """(namespace, service) -> (configmap name, MapCachePool), replaced when the Deployment's
    configuration changes."""

    def __init__(self, api: client.ApiClient, state: Path, workers: int):
        self.api, self.state, self.workers = api, state, workers
        self.core = client.CoreV1Api(api)
        self.pools: dict[tuple[str, str], tuple[str, MapCachePool]] = {}
        self.lock = threading.Lock()

    def cache_dir(self, ns: str, deployment) -> str:
        volumes = {v.name: v for v in deployment.spec.template.spec.volumes or []}
        cache = volumes.get("cache")
        path = host_path_of(self.core, ns, cache) if cache is not None else None
        if path is None:  # emptyDir: a directory of ours
            path = str(self.state / ns / deployment.metadata.name / "cache")
        os.makedirs(path, exist_ok=True)
        return path

    def update(self, deployment) -> None:
        ns = deployment.metadata.namespace
        service = (deployment.metadata.labels or {}).get("app.kubernetes.io/instance")
        volumes = {v.name: v for v in deployment.spec.template.spec.volumes or []}
        cfg = volumes.get("config")
        cm_name = cfg.config_map.name if cfg is not None and cfg.config_map else None
        if not service or not cm_name:
            return
        with self.lock:
            current = self.pools.get((ns, service))
        if current and current[0] == cm_name:
            return
        try:
            cm = self.core.read_namespaced_config_map(cm_name, ns)
        except client.ApiException as e:
            log.warning("configmap %s/%s: %s", ns, cm_name, e.reason)
            return
        xml = configmap_file(cm.data, cm.binary_data, CONFIG_FILE) or ""
        self.wait_for_mapserver(ns, service, xml)
        xml = xml.replace(CACHE_ROOT, self.cache_dir(ns, deployment))
        target = self.state / ns / service / f"{cm_name}.xml"
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(xml)
        try:
            pool = MapCachePool(str(target), self.workers)
        except (OSError, ValueError) as e:
            log.warning("cannot start MapCache for %s/%s: %s", ns, service, e)
            return
        with self.lock:
            old = self.pools.get((ns, service))
            self.pools[(ns, service)] = (cm_name, pool)
        log.info("serving tiles of %s/%s from %s", ns, service, cm_name)
        if old:
            threading.Timer(5.0, old[1].close).start()  # let requests in flight finish

    def wait_for_mapserver(self, ns: str, service: str, xml: str, timeout: float = 20.0) -> None:
        """Hold a new configuration back until every hack/local_mapserver.py worker serves the
        mapfile the MapService's status names. In a cluster the operator only hands MapCache a
        new configuration after MapServer's rollout; the local plane's rollout is instant, and a
        tile of the new version rendered from the old mapfile would stay cached for good."""
        try:
            svc = client.CustomObjectsApi(self.api).get_namespaced_custom_object(
                GROUP, VERSION, ns, "mapservices", service
            )
        except client.ApiException:
            return
        want = (svc.get("status") or {}).get("configMap")
        stats_url = mapserver_stats_url(xml)
        if not want or not stats_url:
            return
        key, t0, serving = f"{ns}/{service}", time.monotonic(), None
        while time.monotonic() - t0 < timeout:
            try:
                with urllib.request.urlopen(stats_url, timeout=5) as r:
                    serving = (json.load(r).get("serving") or {}).get(key)
            except (OSError, ValueError):
                return  # not hack/local_mapserver.py: nothing to wait for
            if serving and all(cm == want for cm in serving):
                return
            time.sleep(0.1)
        log.warning(
            "%s: MapServer workers serve %s, not %s, after %.0f s; going on", key, serving, want, timeout
        )

    def remove(self, ns: str, service: str) -> None:
        with self.lock:
            old = self.pools.pop((ns, service), None)
        if old:
            old[1].close()
            log.info("stopped tiles of %s/%s", ns, service)

    def resolve(self, path: str):
        parts = path.split("/", 3)  # '', ns, service, rest
        if len(parts) < 3:
            return None
        with self.lock:
            entry = self.pools.get((parts[1], parts[2]))
        if entry is None:
            return None
        return entry[1], f"/{parts[1]}/{parts[2]}", "/" + (parts[3] if len(parts) > 3 else "")

    def close(self) -> None:
        with self.lock:
            pools, self.pools = list(self.pools.values()), {}
        for _, pool in pools:
            pool.close()


def mapserver_stats_url(xml: str) -> str | None:
    """/_stats of the loopback MapServer the configuration's WMS sources point at."""
    try:
        url = ElementTree.fromstring(xml).findtext(".//source/http/url")
    except ElementTree.ParseError:
        return None
    parts = urlsplit(url or "")
    if parts.scheme != "http" or parts.hostname not in ("127.0.0.1", "localhost"):
        return None
    return f"http://{parts.netloc}/_stats"


def watch_deployments(caches: Caches) -> None:
    apps = client.AppsV1Api(caches.api)
    while True:  # re-established whenever the server closes the watch
        try:
            for event in watch.Watch().stream(
                apps.list_deployment_for_all_namespaces,
                label_selector=SELECTOR,
                timeout_seconds=60,
                _request_timeout=90,
            ):
                d = event["object"]
                service = (d.metadata.labels or {}).get("app.kubernetes.io/instance")
                if event["type"] == "DELETED":
                    caches.remove(d.metadata.namespace, service)
                else:
                    caches.update(d)
        except Exception as e:
            log.warning("watch interrupted (%s); reconnecting", e)
            time.sleep(1)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--kubeconfig", default=os.environ.get("KUBECONFIG"))
    p.add_argument("--port", type=int, default=8089)
    p.add_argument("--workers", type=int, default=2, help="MapCache FastCGI workers per service")
    p.add_argument("--state-dir", help="where configurations and emptyDir caches go (default: a temp dir)")
    a = p.parse_args()
    logging.basicConfig(
        level=logging.INFO, format="[local-tilecache %(asctime)s] %(message)s", datefmt="%H:%M:%S"
    )
    state = Path(a.state_dir) if a.state_dir else Path(tempfile.mkdtemp(prefix="kms-tiles-"))
    api = config.new_client_from_config(config_file=a.kubeconfig)
    caches = Caches(api, state, a.workers)
    server = TileServer(("127.0.0.1", a.port), make_handler(caches.resolve, access_log=False))

    def stop(*_: object) -> None:
        threading.Thread(target=server.shutdown, daemon=True).start()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    threading.Thread(target=watch_deployments, args=(caches,), daemon=True).start()
    log.info("serving tile caches on http://127.0.0.1:%d/<namespace>/<service>/", a.port)
    try:
        server.serve_forever(poll_interval=0.2)
    finally:
        server.server_close()
        caches.close()
        if not a.state_dir:
            shutil.rmtree(state, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
