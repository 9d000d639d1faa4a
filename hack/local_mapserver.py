#!/usr/bin/env python3
"""Local serving for the kwok plane: watch the mapfile ConfigMaps the operator writes and serve
each MapService's *current* mapfile with real MapServer (in-process mapscript) on loopback.

    hack/local_mapserver.py [--kubeconfig PATH] [--port 8088]
    GET http://127.0.0.1:8088/<namespace>/<service>/?SERVICE=WMS&REQUEST=GetCapabilities

Pod and Service IPs of the local plane are fake, so this stands in for the MapServer pods. The
mapfile is used as generated; only `/data/...` paths are mapped onto the hostPath of the PV behind
the service's data volume (the same files the pods would mount)."""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import shutil
import signal
import sys
import tempfile
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlsplit

import mapscript
from kubernetes import client, config, watch

from kms_operator.builders import mapfile_from_configmap

log = logging.getLogger("local-mapserver")
GROUP, VERSION = "maps.kube-mapserver.io", "v1alpha1"
SELECTOR = "app.kubernetes.io/component=mapfile,app.kubernetes.io/managed-by=kube-mapserver-operator"


def data_root_of(api: client.ApiClient, namespace: str, service: str) -> str | None:
    """hostPath of the PV bound to the MapService's data PVC (where /data points in its pods)."""
    custom, core = client.CustomObjectsApi(api), client.CoreV1Api(api)
    try:
        svc = custom.get_namespaced_custom_object(GROUP, VERSION, namespace, "mapservices", service)
        claim = ((svc.get("spec") or {}).get("data") or {}).get("persistentVolumeClaim")
        if not claim:
            return None
        pvc = core.read_namespaced_persistent_volume_claim(claim, namespace)
        pv = core.read_persistent_volume(pvc.spec.volume_name)
        src = pv.spec.host_path or pv.spec.local
        root = src.path if src else None
        sub = ((svc.get("spec") or {}).get("data") or {}).get("subPath")
        return os.path.join(root, sub) if root and sub else root
    except client.ApiException:
        return None


def load_map(text: str, data_root: str | None, online: str) -> mapscript.mapObj:
    """Parse the generated mapfile with MapServer and map /data onto this machine."""
    m = mapscript.fromstring(text)
    for i in range(m.numlayers):
        layer = m.getLayer(i)
        for attr in ("data", "connection"):
            value = getattr(layer, attr)
            if data_root and value and value.startswith("/data/"):
                setattr(layer, attr, data_root.rstrip("/") + value[len("/data") :])
    m.web.metadata.set("ows_onlineresource", online)
    return m


class WorkerStats:
    """What one worker did and serves, as a JSON file in a directory all workers share: GetMap
    counts per service (tests tell cached tiles from rendered ones) and the mapfile ConfigMap each
    service is served from (hack/local_tilecache.py waits until every worker serves a new one,
    as a tile cache pod would only see the new mapfile after MapServer's rollout)."""

    def __init__(self, directory: str):
        self.directory = directory
        self.path = os.path.join(directory, f"{os.getpid()}.json")
        self.getmap: dict[str, int] = {}
        self.serving: dict[str, str] = {}
        self.lock = threading.Lock()
        self.flush()

    def count_getmap(self, key: str) -> None:
        with self.lock:
            self.getmap[key] = self.getmap.get(key, 0) + 1
            self.flush()

    def serve(self, key: str, configmap: str) -> None:
        with self.lock:
            self.serving[key] = configmap
            self.flush()

    def flush(self) -> None:
        with open(self.path + ".tmp", "w") as f:
            json.dump({"getmap": self.getmap, "serving": self.serving}, f)
        os.replace(self.path + ".tmp", self.path)

    def totals(self) -> dict:
        """GetMap counts summed over all workers; per service, the ConfigMap of every worker."""
        getmap: dict[str, int] = {}
        serving: dict[str, list[str | None]] = {}
        files = []
        for name in sorted(os.listdir(self.directory)):
            if name.endswith(".json"):
                with contextlib.suppress(OSError, ValueError), open(os.path.join(self.directory, name)) as f:
                    files.append(json.load(f))
        for i, data in enumerate(files):
            for key, n in data.get("getmap", {}).items():
                getmap[key] = getmap.get(key, 0) + n
            for key, cm in data.get("serving", {}).items():
                serving.setdefault(key, [None] * len(files))[i] = cm
        return {"getmap": getmap, "serving": serving, "workers": len(files)}


class Maps:
    """(namespace, service) -> loaded mapObj, replaced whenever its ConfigMap changes."""

    def __init__(self, api: client.ApiClient, base_url: str, stats: WorkerStats | None = None):
        self.api, self.base_url = api, base_url.rstrip("/")
        self.maps: dict[tuple[str, str], tuple[str, mapscript.mapObj, threading.Lock]] = {}
        self.lock = threading.Lock()
        self.stats = stats

    def update(self, cm) -> None:
        ns = cm.metadata.namespace
        service = (cm.metadata.labels or {}).get("app.kubernetes.io/instance")
        try:
            text = mapfile_from_configmap(cm.data, cm.binary_data)
        except (KeyError, OSError, ValueError):
            text = None
        if not service or not text:
            return
        current = self.current_configmap(ns, service)
        if current and current != cm.metadata.name:
            return  # an older (or not yet adopted) mapfile: serve what the service says is current
        online = f"{self.base_url}/{ns}/{service}/?"
        try:
            m = load_map(text, data_root_of(self.api, ns, service), online)
        except mapscript.MapServerError as e:
            log.error("mapfile %s/%s does not load, keeping the previous one: %s", ns, cm.metadata.name, e)
            return
        with self.lock:
            self.maps[(ns, service)] = (cm.metadata.name, m, threading.Lock())
        if self.stats:
            self.stats.serve(f"{ns}/{service}", cm.metadata.name)
        log.info(
            "serving %s/%s from %s (%d layers) at %s", ns, service, cm.metadata.name, m.numlayers, online
        )

    def current_configmap(self, ns: str, service: str) -> str | None:
        try:
            svc = client.CustomObjectsApi(self.api).get_namespaced_custom_object(
                GROUP, VERSION, ns, "mapservices", service
            )
        except client.ApiException:
            return None
        return (svc.get("status") or {}).get("configMap")

    def get(self, ns: str, service: str):
        with self.lock:
            return self.maps.get((ns, service))


def dispatch(m: mapscript.mapObj, lock: threading.Lock, query: str) -> tuple[int, dict[str, str], bytes]:
    """Run one OGC request through MapServer as mapserv would: (status, CGI headers, body).
    OGC errors come back as exception reports in the body (MapServer raises *and* writes them)."""
    req = mapscript.OWSRequest()
    req.loadParamsFromURL(query)
    with lock:  # one request per map at a time: a mapObj is not safe to share between threads
        mapscript.msIO_installStdoutToBuffer()
        try:
            try:
                m.OWSDispatch(req)
                error = None
            except mapscript.MapServerError as e:
                error = str(e)
            raw = mapscript.msIO_getStdoutBufferBytes()
        finally:
            mapscript.msIO_resetHandlers()
            mapscript.msResetErrorList()
    if not raw:
        return (
            400,
            {"Content-Type": "text/plain"},
            f"MapServer could not handle the request: {error}\n".encode(),
        )
    head, sep, body = raw.partition(b"\r\n\r\n")
    if not sep:
        head, sep, body = raw.partition(b"\n\n")
    headers = {}
    for line in head.decode("latin-1").splitlines():
        name, _, value = line.partition(":")
        if name.strip() and value:
            headers[name.strip()] = value.strip()
    if "Content-Type" not in headers:  # no CGI header block: all of it is the body
        return 200, {"Content-Type": "application/octet-stream"}, raw
    status = int(headers.pop("Status", "200").split()[0])
    return status, headers, body


def make_handler(maps: Maps, stats: WorkerStats):
    """Routes /<namespace>/<service>/?<OGC request>; /_stats reports over all workers what
    WorkerStats records."""

    class Handler(BaseHTTPRequestHandler):
        server_version = "kube-mapserver-local/1"

        def do_GET(self) -> None:
            parts = urlsplit(self.path)
            segments = [s for s in parts.path.split("/") if s]
            if segments == ["_stats"]:
                return self.reply(200, "application/json", json.dumps(stats.totals()).encode())
            if "request=getmap" in parts.query.lower():
                stats.count_getmap("/".join(segments))
            if len(segments) != 2:
                return self.reply(404, "text/plain", b"use /<namespace>/<service>/?SERVICE=...\n")
            entry = maps.get(*segments)
            if entry is None:
                return self.reply(404, "text/plain", f"no mapfile for {'/'.join(segments)} yet\n".encode())
            t0 = time.monotonic()
            code, headers, body = dispatch(entry[1], entry[2], parts.query)
            self.reply(code, headers.pop("Content-Type"), body, headers)
            log.debug("%s %s %.1f ms", self.path[:120], code, (time.monotonic() - t0) * 1000)

        def reply(self, code: int, ctype: str, body: bytes, extra: dict[str, str] | None = None) -> None:
            self.send_response(code)
            self.send_header("Content-Type", ctype)
            for name, value in (extra or {}).items():
                self.send_header(name, value)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, fmt: str, *args) -> None:
            log.debug(fmt, *args)

    return Handler


def watch_configmaps(maps: Maps) -> None:
    core = client.CoreV1Api(maps.api)
    custom = client.CustomObjectsApi(maps.api)
    while True:  # re-established whenever the server closes the watch
        try:
            for cm in core.list_config_map_for_all_namespaces(label_selector=SELECTOR).items:
                maps.update(cm)
            stream = watch.Watch().stream(
                custom.list_cluster_custom_object,
                GROUP,
                VERSION,
                "mapservices",
                timeout_seconds=60,
                _request_timeout=90,
            )
            # a MapService status change (new configMap adopted) is when to switch mapfiles
            for event in stream:
                svc = event["object"]
                cm_name = (svc.get("status") or {}).get("configMap")
                ns = svc["metadata"]["namespace"]
                entry = maps.get(ns, svc["metadata"]["name"])
                if cm_name and (entry is None or entry[0] != cm_name):
                    try:
                        maps.update(core.read_namespaced_config_map(cm_name, ns))
                    except client.ApiException as e:
                        log.warning("cannot read %s/%s: %s", ns, cm_name, e.reason)
        except Exception as e:
            log.warning("watch interrupted (%s); reconnecting", e)
            time.sleep(1)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--kubeconfig", default=os.environ.get("KUBECONFIG"))
    p.add_argument("--port", type=int, default=8088)
    p.add_argument(
        "--workers",
        type=int,
        default=os.cpu_count() or 2,
        help="pre-forked worker processes (MapScript holds the GIL while rendering)",
    )
    p.add_argument("--verbose", action="store_true")
    a = p.parse_args()
    logging.basicConfig(
        level=logging.DEBUG if a.verbose else logging.INFO,
        format="[local-mapserver %(asctime)s] %(message)s",
        datefmt="%H:%M:%S",
    )
    server = ThreadingHTTPServer(("127.0.0.1", a.port), None)  # bound once, shared by the workers
    stats_dir = tempfile.mkdtemp(prefix="kms-mapserver-stats-")
    children = []
    for _ in range(max(1, a.workers)):
        pid = os.fork()
        if pid == 0:  # worker: its own API client, watch thread and loaded maps
            stats = WorkerStats(stats_dir)
            api = config.new_client_from_config(config_file=a.kubeconfig)
            maps = Maps(api, f"http://127.0.0.1:{a.port}", stats)
            threading.Thread(target=watch_configmaps, args=(maps,), daemon=True).start()
            server.RequestHandlerClass = make_handler(maps, stats)
            server.serve_forever()
            os._exit(0)
        children.append(pid)
    log.info(
        "serving MapServices on http://127.0.0.1:%d/<namespace>/<service>/ (%d workers)",
        a.port,
        len(children),
    )

    def stop(*_: object) -> None:
        for pid in children:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)
        shutil.rmtree(stats_dir, ignore_errors=True)
        sys.exit(0)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    while children:
        pid, _ = os.wait()
        if pid in children:
            children.remove(pid)
            log.error("worker %d exited; stopping", pid)
            stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
