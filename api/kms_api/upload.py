"""Streaming multipart upload straight into the data volume: the size limit is enforced while the
bytes arrive (413, partial file removed); file names are checked before a byte is written."""

from __future__ import annotations

import contextlib
import os
import re
import uuid
from dataclasses import dataclass, field
from pathlib import Path

from fastapi import Request
from python_multipart import MultipartParser
from python_multipart.multipart import parse_options_header

from .errors import Problem

EXTENSIONS = {".tif": "raster", ".tiff": "raster", ".nc": "raster", ".gpkg": "vector", ".geojson": "vector",
              ".json": "vector", ".fgb": "vector"}  # fmt: skip
SAFE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+-]{0,199}$")
FORM_FIELDS = {
    "id",
    "identifier",
    "title",
    "abstract",
    "type",
    "campaign",
    "variant",
    "keywords",
    "projection",
}
MAX_FIELD_BYTES = 8192
DRAIN_LIMIT = 16 * 1024 * 1024


def check_filename(name: str) -> str:
    """The upload's file name, or 422 naming `file`: no separators, control chars, leading dots."""
    if not name:
        raise Problem(422, "the file name is empty", "file")
    if "/" in name or "\\" in name:
        raise Problem(422, "the file name must not contain path separators", "file")
    if any(ord(c) < 32 or ord(c) == 127 for c in name):
        raise Problem(422, "the file name must not contain control characters", "file")
    if name.startswith("."):
        raise Problem(422, "the file name must not start with a dot", "file")
    if not SAFE_NAME.match(name):
        raise Problem(422, "the file name may only use letters, digits and . _ + - (at most 200)", "file")
    ext = os.path.splitext(name)[1].lower()
    if ext not in EXTENSIONS:
        raise Problem(
            422,
            f"file type {ext or '(none)'} not allowed; use one of {', '.join(sorted(EXTENSIONS))}",
            "file",
        )
    return name


class TooLarge(Exception):
    pass


@dataclass
class Received:
    """A finished upload: the temporary file (in the target directory) and the form fields."""

    filename: str
    tmp_path: Path
    size: int
    fields: dict[str, str] = field(default_factory=dict)
    content_type: str = ""  # as the client declared it for the file part

    def discard(self) -> None:
        with contextlib.suppress(FileNotFoundError):
            self.tmp_path.unlink()


class _State:
    def __init__(self, directory: Path, limit: int):
        self.directory, self.limit = directory, limit
        self.headers: dict[str, str] = {}
        self.hname, self.hvalue = b"", b""
        self.part: str | None = None
        self.is_file = False
        self.buf = bytearray()
        self.fields: dict[str, str] = {}
        self.filename: str | None = None
        self.content_type = ""
        self.tmp: Path | None = None
        self.fh = None
        self.size = 0
        self.file_done = False

    def part_begin(self) -> None:
        self.headers, self.part, self.is_file, self.buf = {}, None, False, bytearray()

    def header_field(self, data: bytes, start: int, end: int) -> None:
        self.hname += data[start:end]

    def header_value(self, data: bytes, start: int, end: int) -> None:
        self.hvalue += data[start:end]

    def header_end(self) -> None:
        self.headers[self.hname.decode("latin-1").lower()] = self.hvalue.decode("latin-1")
        self.hname, self.hvalue = b"", b""

    def headers_finished(self) -> None:
        _, opts = parse_options_header(self.headers.get("content-disposition", ""))
        name = opts.get(b"name", b"").decode("utf-8", "replace")
        raw_filename = opts.get(b"filename")
        if raw_filename is not None:
            if name != "file":
                raise Problem(422, f"unexpected file field {name!r}; send the file as 'file'", name or "file")
            if self.fh is not None or self.file_done:
                raise Problem(422, "send exactly one file", "file")
            self.filename = check_filename(raw_filename.decode("utf-8", "replace"))
            self.content_type = self.headers.get("content-type", "")
            self.tmp = self.directory / f".upload-{uuid.uuid4().hex}.part"
            self.fh = open(self.tmp, "xb")  # noqa: SIM115 - closed in part_end or discard
            self.is_file = True
        else:
            if name not in FORM_FIELDS:
                raise Problem(422, f"unknown form field {name!r}", name or "form")
            if len(self.fields) > len(FORM_FIELDS):
                raise Problem(422, "too many form fields", name)
        self.part = name

    def part_data(self, data: bytes, start: int, end: int) -> None:
        n = end - start
        if self.is_file:
            self.size += n
            if self.size > self.limit:
                raise TooLarge()
            self.fh.write(data[start:end])
        else:
            self.buf += data[start:end]
            if len(self.buf) > MAX_FIELD_BYTES:
                raise Problem(
                    422, f"form field {self.part!r} is longer than {MAX_FIELD_BYTES} bytes", self.part
                )

    def part_end(self) -> None:
        if self.is_file:
            self.fh.close()
            self.fh, self.file_done = None, True
        elif self.part:
            try:
                self.fields[self.part] = self.buf.decode("utf-8")
            except UnicodeDecodeError:
                raise Problem(422, f"form field {self.part!r} is not UTF-8", self.part) from None

    def cleanup(self) -> None:
        if self.fh is not None:
            self.fh.close()
            self.fh = None
        if self.tmp is not None:
            with contextlib.suppress(FileNotFoundError):
                self.tmp.unlink()


async def _drain(request: Request) -> None:
    seen = 0
    with contextlib.suppress(Exception):
        async for chunk in request.stream():
            seen += len(chunk)
            if seen > DRAIN_LIMIT:
                break


async def receive(request: Request, directory: Path, limit: int) -> Received:
    """Parse the multipart body chunk by chunk, writing the `file` part under `directory`."""
    kind, opts = parse_options_header(request.headers.get("content-type", ""))
    if kind != b"multipart/form-data" or not opts.get(b"boundary"):
        raise Problem(422, "send multipart/form-data with a 'file' part", "file")
    too_large = Problem(413, f"the file is larger than the limit of {limit // (1024 * 1024)} MiB", "file")
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit + 1024 * 1024:
        await _drain(request)
        raise too_large
    directory.mkdir(parents=True, exist_ok=True)
    st = _State(directory, limit)
    parser = MultipartParser(
        opts[b"boundary"],
        {
            "on_part_begin": st.part_begin,
            "on_header_field": st.header_field,
            "on_header_value": st.header_value,
            "on_header_end": st.header_end,
            "on_headers_finished": st.headers_finished,
            "on_part_data": st.part_data,
            "on_part_end": st.part_end,
        },
    )
    try:
        async for chunk in request.stream():
            parser.write(chunk)
        parser.finalize()
    except TooLarge:
        st.cleanup()
        await _drain(request)
        raise too_large from None
    except Problem:
        st.cleanup()
        raise
    except Exception as e:  # malformed multipart
        st.cleanup()
        raise Problem(422, f"malformed multipart body: {type(e).__name__}", "file") from None
    if st.fh is not None or not st.file_done or st.filename is None or st.tmp is None:
        st.cleanup()
        raise Problem(422, "the body has no complete 'file' part", "file")
    return Received(st.filename, st.tmp, st.size, st.fields, st.content_type)


def place(received: Received, target: Path) -> None:
    """Move the finished upload to its final name without overwriting anything (409 if taken)."""
    try:
        os.link(received.tmp_path, target)
    except FileExistsError:
        raise Problem(409, f"a file named {received.filename!r} was already uploaded", "file") from None
    finally:
        received.discard()
    target.chmod(0o644)
