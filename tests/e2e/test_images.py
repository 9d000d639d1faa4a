"""Image audit: the images `hack/images.py` builds run as non-root and carry no compilers and no pip.

Reads each image's OCI archive (layers applied in order, whiteouts honoured) without running it.
Builds the images of this checkout first (hack/images.py build(): unchanged images are reused)."""

from __future__ import annotations

import json
import posixpath
import re
import tarfile
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.helpers import hack_module

pytestmark = pytest.mark.e2e

REPO = Path(__file__).resolve().parents[2]
APP_IMAGES = ("kube-mapserver", "mapserver", "mapcache")
USER_IMAGES = (*APP_IMAGES, "pause", "coredns")
BIN_DIRS = ("bin", "sbin", "usr/bin", "usr/sbin", "usr/local/bin", "usr/local/sbin")
COMPILER = re.compile(r"(?:[\w.]+-)?(?:gcc|g\+\+|c\+\+|cc|clang|clang\+\+)(?:-[\d.]+)?|make|gmake")
PIP = re.compile(r"pip(?:\d+(?:\.\d+)*)?")
PIP_MODULE = re.compile(r".*/(?:site|dist)-packages/pip/__init__\.py")
READ = {"etc/passwd", "etc/ssl/certs/ca-certificates.crt"}  # files whose content the checks need


@dataclass
class Image:
    """An image's config and its final file tree (path -> tar member type), from its OCI archive."""

    config: dict
    files: dict[str, str] = field(default_factory=dict)
    content: dict[str, bytes] = field(default_factory=dict)

    @property
    def env(self) -> dict[str, str]:
        return dict(e.split("=", 1) for e in self.config.get("config", {}).get("Env") or [])

    def bin_dirs(self) -> set[str]:
        path = self.env.get("PATH", "")
        return set(BIN_DIRS) | {p.strip("/") for p in path.split(":") if p.strip("/")}

    def commands(self, pattern: re.Pattern[str]) -> list[str]:
        """Files on the image's PATH (and the usual bin folders) whose name matches `pattern`."""
        return sorted(
            f"/{path}"
            for path in self.files
            if posixpath.dirname(path) in self.bin_dirs() and pattern.fullmatch(posixpath.basename(path))
        )

    def uid(self) -> int | None:
        """The numeric uid of the configured USER (None: unset, i.e. root)."""
        user = (self.config.get("config", {}).get("User") or "").split(":")[0]
        if not user:
            return None
        if user.isdigit():
            return int(user)
        for line in self.content.get("etc/passwd", b"").decode().splitlines():
            parts = line.split(":")
            if parts[0] == user:
                return int(parts[2])
        raise AssertionError(f"USER {user} is not in /etc/passwd")


def _norm(name: str) -> str:
    return posixpath.normpath(name.lstrip("./") or ".").lstrip("/")


def read_archive(archive: Path) -> Image:
    """Apply the layers of an OCI archive's (single) image in order."""
    with tarfile.open(archive) as outer:

        def blob(digest: str):
            return outer.extractfile("blobs/" + digest.replace(":", "/"))

        index = json.load(outer.extractfile("index.json"))
        manifest = json.load(blob(index["manifests"][0]["digest"]))
        image = Image(json.load(blob(manifest["config"]["digest"])))
        files, content = image.files, image.content
        for layer in manifest["layers"]:
            with tarfile.open(fileobj=blob(layer["digest"]), mode="r|*") as tar:
                for member in tar:
                    name = _norm(member.name)
                    parent, base = posixpath.split(name)
                    if base == ".wh..wh..opq":
                        for path in [p for p in files if p.startswith(parent + "/")]:
                            del files[path]
                        continue
                    if base.startswith(".wh."):
                        gone = posixpath.join(parent, base[4:])
                        for path in [p for p in files if p == gone or p.startswith(gone + "/")]:
                            del files[path]
                        continue
                    files[name] = "l" if member.issym() or member.islnk() else "d" if member.isdir() else "f"
                    if name in READ and member.isfile():
                        content[name] = tar.extractfile(member).read()
    return image


@pytest.fixture(scope="module")
def manifest() -> dict:
    """The images of this checkout: build() reuses every image whose inputs did not change."""
    return hack_module("images").build()


_parsed: dict[str, Image] = {}


@pytest.fixture
def image(request, manifest: dict) -> Image:
    name = request.param
    if name not in _parsed:
        _parsed[name] = read_archive(Path(manifest[name]["archive"]))
    return _parsed[name]


@pytest.mark.parametrize("image", USER_IMAGES, indirect=True)
def test_runs_as_non_root(image: Image) -> None:
    uid = image.uid()
    assert uid is not None, "no USER: the image would run as root"
    assert uid != 0


@pytest.mark.parametrize("image", APP_IMAGES, indirect=True)
def test_no_compilers(image: Image) -> None:
    found = image.commands(COMPILER)
    assert not found, f"compilers in the image: {found}"


@pytest.mark.parametrize("image", APP_IMAGES, indirect=True)
def test_no_pip(image: Image) -> None:
    commands = image.commands(PIP)
    modules = sorted(f"/{path}" for path in image.files if PIP_MODULE.fullmatch(path))
    assert not commands, f"pip commands in the image: {commands}"
    assert not modules, f"the pip module is in the image: {modules}"


@pytest.mark.parametrize("image", ["mapserver"], indirect=True)
def test_mapserver_contract(image: Image) -> None:
    """What the operator's pods use: mapserv on PATH (probe), /bin/sh + gunzip (init), port 8080."""
    needed = ("usr/local/bin/mapserv", "usr/bin/sh", "usr/bin/gunzip", "usr/local/bin/kms-mapserver-httpd")
    for path in needed:
        assert path in image.files, f"/{path} missing"
    cfg = image.config["config"]
    assert cfg["Cmd"] == ["/usr/local/bin/kms-mapserver-httpd"]
    assert "8080/tcp" in cfg.get("ExposedPorts", {})
    assert cfg.get("StopSignal") == "SIGWINCH"  # Apache's graceful stop: a pod's end drops no request
    assert image.uid() == 33


@pytest.mark.parametrize("image", ["kube-mapserver"], indirect=True)
def test_facade_preview_contract(image: Image) -> None:
    """POST /datasets/preview runs Debian's mapserv under prlimit (the facade runs from this image)."""
    for path in ("usr/bin/mapserv", "usr/bin/prlimit"):
        assert path in image.files, f"/{path} missing"


@pytest.mark.parametrize("image", ["mapcache"], indirect=True)
def test_mapcache_contract(image: Image) -> None:
    assert "usr/local/bin/kms-mapcache-httpd" in image.files
    assert "usr/lib/apache2/modules/mod_mapcache.so" in image.files
    assert image.config["config"]["Entrypoint"] == ["/usr/local/bin/kms-mapcache-httpd"]
    assert image.config["config"].get("StopSignal") == "SIGWINCH"
    assert image.uid() == 10001


@pytest.mark.parametrize("image", ["kube-mapserver"], indirect=True)
def test_build_cas_not_in_runtime(image: Image) -> None:
    """Extra CAs the build stage trusted (KMS_BUILD_CA_DIR) never reach the runtime image."""
    images = hack_module("images")
    ca_dir = images.ca_dir()
    if not ca_dir:
        pytest.skip("no extra build CAs on this machine")
    bundle = b"".join(image.content["etc/ssl/certs/ca-certificates.crt"].split())
    for crt in sorted(ca_dir.rglob("*.crt")):
        for body in re.findall(rb"-----BEGIN CERTIFICATE-----(.*?)-----END", crt.read_bytes(), re.S):
            assert b"".join(body.split()) not in bundle, f"{crt} is in the runtime CA bundle"
    assert not [p for p in image.files if p.startswith("usr/local/share/ca-certificates/")]
