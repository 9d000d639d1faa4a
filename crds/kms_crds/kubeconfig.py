"""Where the apiserver is and how to authenticate to it: the pod's service account (in-cluster),
else a kubeconfig (`KUBECONFIG`, its first file, or ~/.kube/config). Supports what clusters and
kind hand out: CA file or data, client certificate/key files or data, a bearer token (inline, a
token file, or an `exec` credential plugin such as the cloud providers' CLIs),
insecure-skip-tls-verify. Tokens are read again when they may have rotated (bound service-account
tokens are renewed every hour; exec credentials carry their expiry).

This is what the `kubernetes` package's config loaders did for us; the product no longer imports
that package (Kopf loads it when installed: 18 MB of resident memory in the operator)."""

from __future__ import annotations

import base64
import json
import os
import ssl
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import yaml

SA_DIR = Path("/var/run/secrets/kubernetes.io/serviceaccount")
TOKEN_REFRESH = 60.0  # seconds a token read from a file is trusted before reading it again


class ConfigError(Exception):
    """No usable cluster configuration."""


@dataclass
class Connection:
    server: str  # https://host:port
    ssl_context: ssl.SSLContext
    token: Callable[[], str | None]  # the bearer token now (None: client certificates only)
    namespace: str = "default"


class _Cached:
    """A token source called at most once per `ttl` (or until an expiry it returns)."""

    def __init__(self, fetch: Callable[[], tuple[str | None, float | None]], ttl: float = TOKEN_REFRESH):
        self.fetch, self.ttl = fetch, ttl
        self.value: str | None = None
        self.until = 0.0
        self.lock = threading.Lock()

    def __call__(self) -> str | None:
        with self.lock:
            if time.monotonic() >= self.until:
                self.value, expires_in = self.fetch()
                self.until = time.monotonic() + (
                    self.ttl if expires_in is None else max(0.0, expires_in - 60)
                )
            return self.value


def _file_token(path: Path) -> Callable[[], str | None]:
    return _Cached(lambda: (path.read_text().strip(), None), TOKEN_REFRESH)


def in_cluster() -> Connection | None:
    host, port = os.environ.get("KUBERNETES_SERVICE_HOST"), os.environ.get("KUBERNETES_SERVICE_PORT")
    if not host or not port or not (SA_DIR / "token").exists():
        return None
    host = f"[{host}]" if ":" in host else host
    ctx = ssl.create_default_context(cafile=str(SA_DIR / "ca.crt"))
    ns_file = SA_DIR / "namespace"
    namespace = ns_file.read_text().strip() if ns_file.exists() else "default"
    return Connection(f"https://{host}:{port}", ctx, _file_token(SA_DIR / "token"), namespace)


def _named(items: list[dict], name: str, what: str) -> dict:
    for item in items or []:
        if item.get("name") == name:
            return item.get(what) or {}
    raise ConfigError(f"kubeconfig: no {what} named {name!r}")


def _load_cert_chain(ctx: ssl.SSLContext, user: dict, base: Path) -> None:
    cert, key = user.get("client-certificate"), user.get("client-key")
    if cert and key:
        ctx.load_cert_chain(str(base / cert), str(base / key))
        return
    cert_data, key_data = user.get("client-certificate-data"), user.get("client-key-data")
    if cert_data and key_data:  # ssl wants files: written privately, read, and removed at once
        with tempfile.TemporaryDirectory(prefix="kms-kubeconfig-") as tmp:
            cert_path, key_path = Path(tmp, "client.crt"), Path(tmp, "client.key")
            for path, data in ((cert_path, cert_data), (key_path, key_data)):
                fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
                with os.fdopen(fd, "wb") as f:
                    f.write(base64.b64decode(data))
            ctx.load_cert_chain(str(cert_path), str(key_path))


def _exec_token(spec: dict, base: Path) -> Callable[[], str | None]:
    """A client-go credential plugin: run it, read ExecCredential.status.token (and its expiry)."""

    def fetch() -> tuple[str | None, float | None]:
        env = {**os.environ, **{e["name"]: e["value"] for e in spec.get("env") or []}}
        env["KUBERNETES_EXEC_INFO"] = json.dumps(
            {"apiVersion": spec.get("apiVersion"), "kind": "ExecCredential", "spec": {"interactive": False}}
        )
        out = subprocess.run(
            [spec["command"], *(spec.get("args") or [])],
            env=env,
            cwd=base,
            capture_output=True,
            check=True,
            timeout=60,
        ).stdout
        status = json.loads(out).get("status") or {}
        expires = status.get("expirationTimestamp")
        left = None
        if expires:
            left = datetime.fromisoformat(expires.replace("Z", "+00:00")).timestamp() - time.time()
        return status.get("token"), left

    return _Cached(fetch)


def from_kubeconfig(path: str | None = None, context: str | None = None) -> Connection:
    path = path or (os.environ.get("KUBECONFIG") or "").split(os.pathsep)[0] or "~/.kube/config"
    file = Path(path).expanduser()
    try:
        cfg = yaml.safe_load(file.read_text()) or {}
    except OSError as e:
        raise ConfigError(f"kubeconfig {file}: {e}") from None
    base = file.parent
    ctx_spec = _named(cfg.get("contexts"), context or cfg.get("current-context") or "", "context")
    cluster = _named(cfg.get("clusters"), ctx_spec.get("cluster", ""), "cluster")
    user = _named(cfg.get("users"), ctx_spec.get("user", ""), "user") if ctx_spec.get("user") else {}
    if cluster.get("insecure-skip-tls-verify"):
        ssl_ctx = ssl.create_default_context()
        ssl_ctx.check_hostname, ssl_ctx.verify_mode = False, ssl.CERT_NONE
    elif cluster.get("certificate-authority-data"):
        ssl_ctx = ssl.create_default_context(
            cadata=base64.b64decode(cluster["certificate-authority-data"]).decode()
        )
    elif cluster.get("certificate-authority"):
        ssl_ctx = ssl.create_default_context(cafile=str(base / cluster["certificate-authority"]))
    else:
        ssl_ctx = ssl.create_default_context()
    _load_cert_chain(ssl_ctx, user, base)
    token: Callable[[], str | None] = lambda: None  # noqa: E731
    if user.get("token"):
        token = lambda: user["token"]  # noqa: E731
    elif user.get("tokenFile"):
        token = _file_token(base / user["tokenFile"])
    elif user.get("exec"):
        token = _exec_token(user["exec"], base)
    server = cluster.get("server") or ""
    if not server:
        raise ConfigError(f"kubeconfig {file}: the cluster has no server")
    return Connection(server.rstrip("/"), ssl_ctx, token, ctx_spec.get("namespace") or "default")


def load(kubeconfig: str | None = None) -> Connection:
    """In-cluster when running in a pod (unless a kubeconfig is named), else the kubeconfig."""
    if not kubeconfig:
        conn = in_cluster()
        if conn is not None:
            return conn
    return from_kubeconfig(kubeconfig)
