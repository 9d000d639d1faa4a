"""A pool of MapCache FastCGI worker processes sharing one listening unix socket."""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import socket
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterable, Mapping

from . import fastcgi

DEFAULT_BINARY = "/usr/lib/cgi-bin/mapcache"
HEALTH_PATH = "/tms/1.0.0/"  # the TMS service root: 200 only with a loaded, valid configuration
QUICK_DEATH = 2.0  # a worker dying sooner than this after its start is restarted with a backoff
MAX_BACKOFF = 5.0
_SETPRIV = shutil.which("setpriv")
PDEATHSIG = [_SETPRIV, "--pdeathsig", "TERM", "--"] if _SETPRIV else []

log = logging.getLogger("kms_tiles.pool")

Headers = Mapping[str, str] | Iterable[tuple[str, str]]
# request headers never passed on as HTTP_* params: hop-by-hop ones, the body's, and Proxy (httpoxy)
SKIPPED_HEADERS = {"connection", "keep-alive", "proxy", "te", "trailer", "transfer-encoding", "upgrade"}


def _wait_for_exec(proc: subprocess.Popen[bytes], binary_path: str, timeout: float = 5.0) -> None:
    """Wait until setpriv has exec'd `binary_path` in `proc`: its parent-death signal is set only then, so a
    parent killed earlier would leave the worker running (the signal survives the exec)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and proc.poll() is None:
        try:
            if os.readlink(f"/proc/{proc.pid}/exe") == binary_path:
                return
        except OSError:
            return  # no /proc (or the process is gone): nothing to wait for
        time.sleep(0.002)


class _Worker:
    def __init__(self, proc: subprocess.Popen[bytes]):
        self.proc, self.started, self.failures, self.restart_at = proc, time.monotonic(), 0, 0.0


class MapCachePool:
    """`workers` `mapcache` FastCGI processes (config from MAPCACHE_CONFIG_FILE=`config_path`) accepting on
    one unix socket in a private temp dir. A watcher thread restarts workers that die (with a backoff when
    they die right after starting). Thread-safe: each request uses its own connection."""

    def __init__(
        self,
        config_path: str,
        workers: int = 2,
        env: dict[str, str] | None = None,
        *,
        binary: str = DEFAULT_BINARY,
        timeout: float = 60.0,
        backlog: int = 256,
        health_path: str = HEALTH_PATH,
    ):
        if workers < 1:
            raise ValueError("workers must be >= 1")
        if not os.access(binary, os.X_OK):
            raise FileNotFoundError(f"mapcache FastCGI binary {binary!r} not found or not executable")
        self.config_path = os.path.abspath(config_path)
        self.binary, self.timeout, self.health_path = binary, timeout, health_path
        self._binary_path = os.path.realpath(binary)
        self.env = {**os.environ, **(env or {}), "MAPCACHE_CONFIG_FILE": self.config_path}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._requests = 0
        self._errors = 0
        self._restarts = 0
        self._dir = tempfile.mkdtemp(prefix="kms-mapcache-")
        self.socket_path = os.path.join(self._dir, "mapcache.sock")
        self._listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self._workers: list[_Worker] = []
        self._ready = threading.Event()
        self._start_error: BaseException | None = None
        try:
            self._listener.bind(self.socket_path)
            self._listener.listen(backlog)
        except BaseException:
            self._shutdown(timeout=2.0)
            raise
        # workers are started (and restarted) by this thread only: their parent-death signal is tied to it
        self._watcher = threading.Thread(target=self._run, args=(workers,), name="mapcache-pool", daemon=True)
        self._watcher.start()
        self._ready.wait()
        if self._start_error is not None:
            self.close(timeout=2.0)
            raise self._start_error
        log.info("mapcache pool started", extra={"workers": workers, "config": self.config_path})

    # -- processes ------------------------------------------------------------------------------

    def _spawn(self) -> subprocess.Popen[bytes]:
        # fd 0 is the listening socket: libfcgi then runs as a FastCGI server accepting on it. setpriv
        # gives the worker SIGTERM when its parent (thread) dies, so a killed server leaves no workers.
        proc = subprocess.Popen(
            [*PDEATHSIG, self.binary],
            stdin=self._listener.fileno(),
            stdout=subprocess.DEVNULL,
            env=self.env,
            cwd=self._dir,
        )
        if PDEATHSIG:
            _wait_for_exec(proc, self._binary_path)
        return proc

    def _run(self, workers: int) -> None:
        try:
            for _ in range(workers):
                self._workers.append(_Worker(self._spawn()))
        except BaseException as e:
            self._start_error = e
            return
        finally:
            self._ready.set()
        self._watch()

    def _watch(self) -> None:
        while not self._stop.wait(0.05):
            with self._lock:
                if self._stop.is_set():
                    return
                for i, w in enumerate(self._workers):
                    code = w.proc.poll()
                    if code is None:
                        continue
                    now = time.monotonic()
                    if w.restart_at == 0.0:  # just noticed: decide when to restart it
                        quick = now - w.started < QUICK_DEATH
                        w.failures = w.failures + 1 if quick else 0
                        delay = min(0.1 * 2 ** (w.failures - 1), MAX_BACKOFF) if quick else 0.0
                        w.restart_at = now + delay
                        log.warning(
                            "mapcache worker exited, restarting",
                            extra={"pid": w.proc.pid, "exitCode": code, "delaySeconds": round(delay, 2)},
                        )
                    if now >= w.restart_at:
                        try:
                            proc = self._spawn()
                        except OSError as e:
                            log.error("cannot start a mapcache worker", extra={"error": str(e)})
                            w.restart_at = now + MAX_BACKOFF
                            continue
                        fresh = _Worker(proc)
                        fresh.failures = w.failures
                        self._workers[i] = fresh
                        self._restarts += 1

    @property
    def pids(self) -> list[int]:
        """Process ids of the live workers."""
        with self._lock:
            return [w.proc.pid for w in self._workers if w.proc.poll() is None]

    @property
    def requests(self) -> int:
        """Requests answered (any status) since the pool started."""
        return self._requests

    @property
    def errors(self) -> int:
        """Requests that got no answer (connection failure, protocol error, timeout)."""
        return self._errors

    @property
    def restarts(self) -> int:
        return self._restarts

    # -- requests -------------------------------------------------------------------------------

    def request(
        self,
        method: str = "GET",
        path_info: str = "/",
        query: str = "",
        headers: Headers | None = None,
        script_name: str = "",
        server_name: str = "localhost",
        server_port: int = 80,
        *,
        body: bytes = b"",
        https: bool = False,
        remote_addr: str = "",
        timeout: float | None = None,
    ) -> tuple[int, list[tuple[str, str]], bytes]:
        """Run one request through a worker: `(status, headers, body)` of MapCache's answer.
        `headers` (HTTP request headers) become HTTP_* params. FastCGIError if no worker answered."""
        if self._stop.is_set():
            raise fastcgi.FastCGIError("the mapcache pool is closed")
        params: dict[str, str] = {
            "GATEWAY_INTERFACE": "CGI/1.1",
            "SERVER_SOFTWARE": "kube-mapserver-tiles",
            "SERVER_PROTOCOL": "HTTP/1.1",
            "REQUEST_METHOD": method,
            "SCRIPT_NAME": script_name,
            "PATH_INFO": path_info,
            "QUERY_STRING": query,
            "REQUEST_URI": script_name + path_info + ("?" + query if query else ""),
            "SERVER_NAME": server_name,
            "SERVER_PORT": str(server_port),
            "REMOTE_ADDR": remote_addr,
            "CONTENT_LENGTH": str(len(body)) if body else "",
        }
        if https:
            params["HTTPS"] = "on"
        items = headers.items() if isinstance(headers, Mapping) else (headers or ())
        for name, value in items:
            key = name.strip().lower()
            if key in SKIPPED_HEADERS or not key.replace("-", "").isalnum():
                continue
            if key in ("content-type", "content-length"):
                params[key.upper().replace("-", "_")] = value
            else:
                params["HTTP_" + key.upper().replace("-", "_")] = value
        wait = self.timeout if timeout is None else timeout
        try:
            try:
                result = fastcgi.request(self.socket_path, params, body, timeout=wait)
            except fastcgi.FastCGITimeout:
                raise
            except fastcgi.FastCGIError:
                # e.g. the worker died mid-request: one more try on another worker (GET/HEAD only)
                if method not in ("GET", "HEAD") or self._stop.is_set():
                    raise
                result = fastcgi.request(self.socket_path, params, body, timeout=wait)
            response = fastcgi.parse_cgi_response(result.stdout)
        except fastcgi.FastCGIError:
            with self._lock:
                self._errors += 1
            raise
        with self._lock:
            self._requests += 1
        if result.stderr:
            log.warning(
                "mapcache stderr",
                extra={"path": path_info, "stderr": result.stderr.decode("utf-8", "replace").strip()[:2000]},
            )
        return response.status, response.headers, response.body

    def healthy(self, timeout: float = 5.0) -> bool:
        """True when a worker answers a request on the health path (TMS root) with 200."""
        try:
            status, _, _ = self.request("GET", self.health_path, timeout=timeout)
        except fastcgi.FastCGIError as e:
            log.warning("mapcache health check failed", extra={"error": str(e)})
            return False
        return status == 200

    # -- shutdown -------------------------------------------------------------------------------

    def close(self, timeout: float = 5.0) -> None:
        """Stop the watcher, SIGTERM every worker (SIGKILL after `timeout`), wait for them and remove the
        socket directory. Idempotent."""
        if self._stop.is_set() and not self._workers:
            return
        self._stop.set()
        watcher = getattr(self, "_watcher", None)
        if watcher is not None and watcher is not threading.current_thread():
            watcher.join()
        self._shutdown(timeout)
        log.info("mapcache pool stopped", extra={"requests": self._requests})

    def _shutdown(self, timeout: float) -> None:
        self._stop.set()
        with self._lock:
            procs = [w.proc for w in self._workers]
            self._workers = []
        for p in procs:
            if p.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    p.terminate()
        deadline = time.monotonic() + timeout
        for p in procs:
            try:
                p.wait(max(deadline - time.monotonic(), 0.01))
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
        self._listener.close()
        shutil.rmtree(self._dir, ignore_errors=True)

    def __enter__(self) -> MapCachePool:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
