"""The layer preview page at /ui/: the static bundle hack/ui.sh (or the image build) makes from ui/
(OpenLayers from npm, pinned by ui/package-lock.json). The files are public like /docs; every
call the page makes goes through the API with the bearer token of its login form.

Served with a Content-Security-Policy that allows scripts and styles from this origin only (no
inline code), map images and feature info from any http(s) map service (their URLs come from the
datasets' status), and nothing else."""

from __future__ import annotations

import re
from pathlib import Path

from fastapi import APIRouter
from fastapi.responses import FileResponse, PlainTextResponse, RedirectResponse, Response

from ..errors import Problem

UI_DIR = Path(__file__).resolve().parent.parent / "ui_static"
FILE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,100}$")
TYPES = {".html": "text/html; charset=utf-8", ".js": "text/javascript", ".css": "text/css"}
CSP = "; ".join(
    (
        "default-src 'none'",
        "script-src 'self'",
        "style-src 'self'",
        "img-src 'self' data: blob: http: https:",
        "connect-src 'self' http: https:",
        "base-uri 'none'",
        "form-action 'self'",
        "frame-ancestors 'none'",
    )
)
HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
    "Cache-Control": "no-cache",
}

router = APIRouter(include_in_schema=False)


def _file(name: str, root: Path = UI_DIR) -> Response:
    path = root / name
    if not FILE_NAME.match(name) or path.suffix not in TYPES or not path.is_file():
        raise Problem(404, f"no file {name!r} in the page")
    return FileResponse(path, media_type=TYPES[path.suffix], headers=HEADERS)


@router.get("/ui")
def ui_root() -> RedirectResponse:
    return RedirectResponse("/ui/", status_code=307)


@router.get("/ui/")
def ui_index() -> Response:
    if not (UI_DIR / "index.html").is_file():
        return PlainTextResponse(
            "the /ui/ page is not built: run hack/ui.sh (make setup) or use the product image",
            status_code=503,
            headers={"Retry-After": "3600"},
        )
    return _file("index.html")


@router.get("/ui/{name}")
def ui_file(name: str) -> Response:
    return _file(name)
