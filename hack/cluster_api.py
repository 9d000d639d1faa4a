"""A minimal HTTPS client for the plane's apiserver, with the admin client certificate."""

from __future__ import annotations

import json
import ssl
import urllib.error
import urllib.request
from pathlib import Path


def _opener(ctx: ssl.SSLContext) -> urllib.request.OpenerDirector:
    """Straight to the apiserver: never through a proxy from the environment."""
    handlers = (urllib.request.ProxyHandler({}), urllib.request.HTTPSHandler(context=ctx))
    return urllib.request.build_opener(*handlers)


def api_get(state: dict, pki: Path, path: str, timeout: float = 5) -> tuple[int, bytes]:
    ctx = ssl.create_default_context(cafile=str(pki / "ca.crt"))
    ctx.load_cert_chain(str(pki / "admin.crt"), str(pki / "admin.key"))
    url = f"https://{state.get('host', '127.0.0.1')}:{state['ports']['apiserver']}{path}"
    try:
        with _opener(ctx).open(url, timeout=timeout) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


def api_send(state: dict, pki: Path, method: str, path: str, body: dict) -> tuple[int, bytes]:
    ctx = ssl.create_default_context(cafile=str(pki / "ca.crt"))
    ctx.load_cert_chain(str(pki / "admin.crt"), str(pki / "admin.key"))
    url = f"https://{state.get('host', '127.0.0.1')}:{state['ports']['apiserver']}{path}"
    req = urllib.request.Request(
        url, method=method, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"}
    )
    try:
        with _opener(ctx).open(req, timeout=10) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()
