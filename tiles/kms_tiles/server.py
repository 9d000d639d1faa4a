"""`kube-mapserver-tiles`: an HTTP server forwarding GET/HEAD requests to a pool of MapCache FastCGI workers.

`/tms/1.0.0/<dataset>@GoogleMapsCompatible/{z}/{x}/{y}.png`, `/gmaps/<dataset>@<grid>/{z}/{x}/{y}.png`,
`/wmts?...`, `/wmts/1.0.0/...` and `/?SERVICE=WMS&...` are MapCache's; `/healthz` is 200 while the pool
answers. `make_handler(resolve)` is the reusable part: `resolve(path)` picks the pool, SCRIPT_NAME and
PATH_INFO of a request, so one server can front several pools (one per service)."""

from __future__ import annotations

import argparse
import gzip
import json
import logging
import os
import signal
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import unquote, urlsplit

from . import fastcgi
from .pool import MapCachePool

log = logging.getLogger("kms_tiles.server")

Resolved = tuple[MapCachePool, str, str]  # (pool, SCRIPT_NAME, PATH_INFO)
Resolver = Callable[[str], Resolved | None]

HOP_BY_HOP = {"connection", "keep-alive", "transfer-encoding", "content-length", "upgrade", "trailer"}
GRACE_SECONDS = 20.0


class JsonFormatter(logging.Formatter):
    """One JSON object per line: ts, level, logger, msg and the record's `extra` fields."""

    _standard = set(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {"message", "asctime"}

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "ts": round(record.created, 3),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        line.update({k: v for k, v in vars(record).items() if k not in self._standard})
        if record.exc_info:
            line["traceback"] = self.formatException(record.exc_info)
        return json.dumps(line, separators=(",", ":"), default=str)


def setup_logging(level: str = "info") -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger("kms_tiles")
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    root.propagate = False


def _host_port(host: str, default_port: int) -> tuple[str, int]:
    """`example.org:8080` / `[::1]:8080` / `example.org` -> (name, port)."""
    host = host.strip()
    if host.startswith("["):
        name, _, rest = host[1:].partition("]")
        port = rest[1:] if rest.startswith(":") else ""
    else:
        name, _, port = host.rpartition(":") if host.count(":") == 1 else (host, "", "")
    return name, int(port) if port.isdigit() else default_port


def make_handler(
    resolve: Resolver,
    health: Callable[[], bool] | None = None,
    *,
    access_log: bool = True,
) -> type[BaseHTTPRequestHandler]:
    """A request handler class: GET/HEAD go to the pool `resolve(path)` returns (404 when it returns None;
    the path is percent-decoded, without the query string), other methods get 405. With `health`,
    `/healthz` answers 200 or 503 from `health()` instead. The server name and port MapCache writes into
    capabilities come from X-Forwarded-Host / Host, the scheme from X-Forwarded-Proto."""

    class TileHandler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"  # keep-alive: tile clients fetch many tiles per connection
        server_version = "kube-mapserver-tiles"
        sys_version = ""
        timeout = 60  # idle keep-alive connections are closed after this many seconds
        disable_nagle_algorithm = True  # headers and body are separate writes: no 40 ms delayed-ACK stall

        def do_GET(self) -> None:
            self._handle(send_body=True)

        def do_HEAD(self) -> None:
            self._handle(send_body=False)

        def _not_allowed(self) -> None:
            self._reply(
                405, [("Allow", "GET, HEAD"), ("Content-Type", "text/plain")], b"method not allowed\n"
            )

        do_POST = do_PUT = do_DELETE = do_PATCH = do_OPTIONS = _not_allowed

        def _handle(self, send_body: bool) -> None:
            started = time.perf_counter()
            track = getattr(self.server, "track", None)
            if track:
                track(+1)
            try:
                status, length = self._dispatch(send_body)
            finally:
                if track:
                    track(-1)
            if access_log:
                log.info(
                    "request",
                    extra={
                        "method": self.command,
                        "path": self.path[:500],
                        "status": status,
                        "bytes": length,
                        "ms": round((time.perf_counter() - started) * 1000, 2),
                    },
                )

        def _dispatch(self, send_body: bool) -> tuple[int, int]:
            url = urlsplit(self.path)
            path = unquote(url.path) or "/"
            if health is not None and path == "/healthz":
                ok = health()
                return self._reply(
                    200 if ok else 503,
                    [("Content-Type", "text/plain")],
                    b"ok\n" if ok else b"unhealthy\n",
                    send_body,
                )
            target = resolve(path)
            if target is None:
                return self._reply(404, [("Content-Type", "text/plain")], b"not found\n", send_body)
            pool, script_name, path_info = target
            forwarded_proto = (self.headers.get("X-Forwarded-Proto") or "").split(",")[0].strip().lower()
            https = forwarded_proto == "https"
            host = (self.headers.get("X-Forwarded-Host") or "").split(",")[0].strip() or self.headers.get(
                "Host", ""
            )
            default_port = (
                443 if https else (80 if forwarded_proto == "http" else self.server.server_address[1])
            )
            if host:
                server_name, server_port = _host_port(host, default_port)
            else:
                server_name, server_port = (
                    str(self.server.server_address[0]),
                    int(self.server.server_address[1]),
                )
            try:
                status, headers, body = pool.request(
                    self.command,
                    path_info,
                    url.query,
                    list(self.headers.items()),
                    script_name,
                    server_name,
                    server_port,
                    https=https,
                    remote_addr=self.client_address[0] if self.client_address else "",
                )
            except fastcgi.FastCGITimeout as e:
                log.warning("mapcache timed out", extra={"path": path, "error": str(e)})
                return self._reply(
                    504, [("Content-Type", "text/plain")], b"tile cache timed out\n", send_body
                )
            except fastcgi.FastCGIError as e:
                log.warning("mapcache failed", extra={"path": path, "error": str(e)})
                return self._reply(
                    502, [("Content-Type", "text/plain")], b"tile cache unavailable\n", send_body
                )
            headers = [(k, v) for k, v in headers if k.lower() not in HOP_BY_HOP]
            return self._reply(status, headers, body, send_body)

        def _reply(
            self, status: int, headers: list[tuple[str, str]], body: bytes, send_body: bool = True
        ) -> tuple[int, int]:
            no_body = status == 304 or status < 200 or status == 204
            self.send_response_only(status)
            self.send_header("Date", self.date_time_string())
            for name, value in headers:
                self.send_header(name, value)
            if not no_body:
                self.send_header("Content-Length", str(len(body)))
            if getattr(self.server, "stopping", False):
                self.send_header("Connection", "close")
                self.close_connection = True
            self.end_headers()
            if send_body and not no_body:
                self.wfile.write(body)
            return status, len(body)

        def log_message(self, format: str, *args: Any) -> None:
            log.debug("http", extra={"detail": format % args})

    return TileHandler


class TileServer(ThreadingHTTPServer):
    """ThreadingHTTPServer that counts requests in flight, so a shutdown can wait for them."""

    daemon_threads = True
    request_queue_size = 128

    def __init__(self, address: tuple[str, int], handler: type[BaseHTTPRequestHandler]):
        super().__init__(address, handler)
        self.stopping = False
        self._inflight = 0
        self._cond = threading.Condition()

    def track(self, delta: int) -> None:
        with self._cond:
            self._inflight += delta
            self._cond.notify_all()

    def drain(self, timeout: float) -> bool:
        """Wait until no request is in flight (True) or `timeout` passed (False)."""
        with self._cond:
            return self._cond.wait_for(lambda: self._inflight == 0, timeout)


def single_pool(pool: MapCachePool) -> Resolver:
    """Every path goes to `pool`, as PATH_INFO, with an empty SCRIPT_NAME."""
    return lambda path: (pool, "", path)


def plain_config(path: str) -> str:
    """The configuration file MapCache reads: `path`, or for `*.gz` (a large configuration the
    operator stored gzipped) its content unpacked into a private temp file."""
    if not path.endswith(".gz"):
        return path
    with gzip.open(path, "rb") as f:
        text = f.read()
    fd, plain = tempfile.mkstemp(prefix="mapcache-", suffix=".xml")
    with os.fdopen(fd, "wb") as out:
        out.write(text)
    return plain


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="kube-mapserver-tiles", description="Serve a MapCache configuration over HTTP (FastCGI workers)."
    )
    p.add_argument(
        "--config", default="/etc/mapcache/mapcache.xml", help="MapCache XML (default %(default)s)"
    )
    p.add_argument("--host", default="0.0.0.0", help="listen address (default %(default)s)")
    p.add_argument("--port", type=int, default=8080, help="listen port (default %(default)s)")
    p.add_argument("--workers", type=int, default=2, help="mapcache FastCGI processes (default %(default)s)")
    p.add_argument("--timeout", type=float, default=60.0, help="seconds per request (default %(default)s)")
    p.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])
    p.add_argument("--no-access-log", action="store_true", help="do not log every request")
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    setup_logging(args.log_level)
    try:
        pool = MapCachePool(plain_config(args.config), args.workers, timeout=args.timeout)
    except (OSError, ValueError) as e:
        log.error("cannot start the mapcache pool", extra={"error": str(e)})
        return 1
    try:
        server = TileServer(
            (args.host, args.port),
            make_handler(single_pool(pool), pool.healthy, access_log=not args.no_access_log),
        )
    except OSError as e:
        pool.close()
        log.error("cannot listen", extra={"host": args.host, "port": args.port, "error": str(e)})
        return 1

    def stop(signum: int, _frame: Any) -> None:
        if server.stopping:
            return
        server.stopping = True
        log.info("stopping", extra={"signal": signal.Signals(signum).name})
        threading.Thread(target=server.shutdown, daemon=True).start()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    log.info(
        "listening",
        extra={
            "host": args.host,
            "port": server.server_address[1],
            "config": args.config,
            "workers": args.workers,
        },
    )
    try:
        server.serve_forever(poll_interval=0.2)
    finally:
        drained = server.drain(GRACE_SECONDS)
        server.server_close()
        pool.close()
        log.info("stopped", extra={"drained": drained, "requests": pool.requests})
    return 0


if __name__ == "__main__":
    sys.exit(main())
