"""A small FastCGI client (responder role, one request per connection) and a CGI response parser.

Protocol: https://fastcgi-archives.github.io/FastCGI_Specification.html"""

from __future__ import annotations

import socket
import struct
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

VERSION_1 = 1
BEGIN_REQUEST = 1
ABORT_REQUEST = 2
END_REQUEST = 3
PARAMS = 4
STDIN = 5
STDOUT = 6
STDERR = 7
DATA = 8
GET_VALUES = 9
GET_VALUES_RESULT = 10
UNKNOWN_TYPE = 11

RESPONDER = 1
KEEP_CONN = 1

REQUEST_COMPLETE = 0
PROTOCOL_STATUS = {0: "request complete", 1: "cannot multiplex", 2: "overloaded", 3: "unknown role"}

HEADER = struct.Struct(">BBHHBx")  # version, type, requestId, contentLength, paddingLength, reserved
MAX_CONTENT = 0xFFFF
MAX_NV_LENGTH = 0x7FFFFFFF

Address = str | tuple[str, int]
Params = Mapping[str, str | bytes] | Iterable[tuple[str, str | bytes]]


class FastCGIError(Exception):
    """The application could not be reached or broke the protocol."""


class FastCGITimeout(FastCGIError, TimeoutError):
    """No complete answer within the timeout."""


@dataclass
class Result:
    """The raw answer: the CGI output (FCGI_STDOUT), FCGI_STDERR and the application's exit status."""

    stdout: bytes
    stderr: bytes = b""
    app_status: int = 0
    protocol_status: int = REQUEST_COMPLETE


@dataclass
class Response:
    """A parsed CGI response."""

    status: int
    headers: list[tuple[str, str]] = field(default_factory=list)
    body: bytes = b""


def _length(n: int) -> bytes:
    if n > MAX_NV_LENGTH:
        raise ValueError(f"FastCGI name/value too long ({n} bytes)")
    return bytes([n]) if n < 128 else struct.pack(">I", n | 0x80000000)


def _bytes(value: str | bytes) -> bytes:
    return value if isinstance(value, bytes) else value.encode("utf-8", "surrogateescape")


def encode_params(params: Params) -> bytes:
    """Name-value pairs: 1-byte lengths below 128, else 4 bytes with the high bit set."""
    items = params.items() if isinstance(params, Mapping) else params
    out = bytearray()
    for name, value in items:
        n, v = _bytes(name), _bytes(value)
        out += _length(len(n)) + _length(len(v)) + n + v
    return bytes(out)


def decode_params(data: bytes) -> dict[str, str]:
    """The inverse of `encode_params` (names and values decoded as UTF-8)."""
    out: dict[str, str] = {}
    pos = 0

    def length() -> int:
        nonlocal pos
        if pos >= len(data):
            raise FastCGIError("truncated name-value pair")
        if data[pos] < 128:
            pos += 1
            return data[pos - 1]
        if pos + 4 > len(data):
            raise FastCGIError("truncated name-value pair")
        (n,) = struct.unpack_from(">I", data, pos)
        pos += 4
        return n & MAX_NV_LENGTH

    while pos < len(data):
        nlen, vlen = length(), length()
        if pos + nlen + vlen > len(data):
            raise FastCGIError("truncated name-value pair")
        name = data[pos : pos + nlen].decode("utf-8", "replace")
        out[name] = data[pos + nlen : pos + nlen + vlen].decode("utf-8", "replace")
        pos += nlen + vlen
    return out


def record(rtype: int, request_id: int, content: bytes = b"") -> bytes:
    """One record, padded to a multiple of 8 bytes."""
    if len(content) > MAX_CONTENT:
        raise ValueError("record content longer than 65535 bytes")
    padding = -len(content) % 8
    return HEADER.pack(VERSION_1, rtype, request_id, len(content), padding) + content + b"\0" * padding


def stream(rtype: int, request_id: int, data: bytes) -> bytes:
    """A stream (PARAMS, STDIN): `data` cut into records, then the empty record that ends it."""
    chunks = [record(rtype, request_id, data[i : i + MAX_CONTENT]) for i in range(0, len(data), MAX_CONTENT)]
    return b"".join([*chunks, record(rtype, request_id)])


def _connect(address: Address, timeout: float) -> socket.socket:
    family = socket.AF_UNIX if isinstance(address, str) else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.settimeout(timeout)
    try:
        sock.connect(address)
    except TimeoutError:
        sock.close()
        raise FastCGITimeout(f"connecting to {address!r} timed out") from None
    except OSError as e:
        sock.close()
        raise FastCGIError(f"cannot connect to {address!r}: {e.strerror or e}") from None
    return sock


class _Reader:
    """Records from a socket, honouring an overall deadline."""

    def __init__(self, sock: socket.socket, deadline: float):
        self.sock, self.deadline, self.buf = sock, deadline, bytearray()

    def _fill(self, n: int) -> None:
        while len(self.buf) < n:
            remaining = self.deadline - time.monotonic()
            if remaining <= 0:
                raise FastCGITimeout("timed out waiting for the FastCGI application")
            self.sock.settimeout(remaining)
            try:
                chunk = self.sock.recv(max(65536, n - len(self.buf)))
            except TimeoutError:
                raise FastCGITimeout("timed out waiting for the FastCGI application") from None
            except OSError as e:
                raise FastCGIError(
                    f"reading from the FastCGI application failed: {e.strerror or e}"
                ) from None
            if not chunk:
                raise FastCGIError("the FastCGI application closed the connection before ending the request")
            self.buf += chunk

    def next(self) -> tuple[int, int, bytes]:
        self._fill(HEADER.size)
        version, rtype, request_id, clen, plen = HEADER.unpack_from(self.buf)
        if version != VERSION_1:
            raise FastCGIError(f"unexpected FastCGI protocol version {version}")
        self._fill(HEADER.size + clen + plen)
        content = bytes(self.buf[HEADER.size : HEADER.size + clen])
        del self.buf[: HEADER.size + clen + plen]
        return rtype, request_id, content


def _send(sock: socket.socket, data: bytes, deadline: float) -> None:
    remaining = deadline - time.monotonic()
    if remaining <= 0:
        raise FastCGITimeout("timed out sending to the FastCGI application")
    sock.settimeout(remaining)
    try:
        sock.sendall(data)
    except TimeoutError:
        raise FastCGITimeout("timed out sending to the FastCGI application") from None
    except OSError as e:
        raise FastCGIError(f"sending to the FastCGI application failed: {e.strerror or e}") from None


def request(
    address: Address,
    params: Params,
    body: bytes = b"",
    timeout: float = 60.0,
    request_id: int = 1,
) -> Result:
    """Run one responder request on a new connection (closed afterwards) and return its raw answer.

    FastCGITimeout if the whole exchange takes longer than `timeout` seconds, FastCGIError if the
    application cannot be reached, closes the connection early or rejects the request."""
    deadline = time.monotonic() + timeout
    payload = (
        record(BEGIN_REQUEST, request_id, struct.pack(">HB5x", RESPONDER, 0))
        + stream(PARAMS, request_id, encode_params(params))
        + stream(STDIN, request_id, body)
    )
    sock = _connect(address, timeout)
    try:
        _send(sock, payload, deadline)
        reader = _Reader(sock, deadline)
        stdout: list[bytes] = []
        stderr: list[bytes] = []
        while True:
            rtype, rid, content = reader.next()
            if rid != request_id:
                continue  # a management record or a stray request id: not ours
            if rtype == STDOUT:
                stdout.append(content)
            elif rtype == STDERR:
                stderr.append(content)
            elif rtype == END_REQUEST:
                app_status, protocol_status = struct.unpack_from(">IB", content)
                if protocol_status != REQUEST_COMPLETE:
                    reason = PROTOCOL_STATUS.get(protocol_status, str(protocol_status))
                    raise FastCGIError(f"the FastCGI application rejected the request: {reason}")
                return Result(b"".join(stdout), b"".join(stderr), app_status, protocol_status)
    finally:
        sock.close()


def get_values(address: Address, names: Iterable[str], timeout: float = 5.0) -> dict[str, str]:
    """FCGI_GET_VALUES (e.g. FCGI_MAX_CONNS, FCGI_MAX_REQS, FCGI_MPXS_CONNS): a management request."""
    deadline = time.monotonic() + timeout
    sock = _connect(address, timeout)
    try:
        _send(sock, record(GET_VALUES, 0, encode_params([(n, "") for n in names])), deadline)
        reader = _Reader(sock, deadline)
        while True:
            rtype, rid, content = reader.next()
            if rid == 0 and rtype == GET_VALUES_RESULT:
                return decode_params(content)
            if rid == 0 and rtype == UNKNOWN_TYPE:
                raise FastCGIError("the FastCGI application does not support FCGI_GET_VALUES")
    finally:
        sock.close()


def parse_cgi_response(output: bytes) -> Response:
    """Split CGI output into status, headers and body. `Status:` sets the status (it may appear after
    other headers); a `Location:` without a status means 302; otherwise 200. Lines may end in CRLF or LF."""
    headers: list[tuple[str, str]] = []
    status: int | None = None
    pos = 0
    while True:
        nl = output.find(b"\n", pos)
        if nl < 0:
            raise FastCGIError("malformed CGI response: no blank line after the headers")
        line = output[pos:nl].rstrip(b"\r")
        pos = nl + 1
        if not line:
            break
        name, sep, value = line.decode("latin-1").partition(":")
        if not sep or not name.strip():
            raise FastCGIError(f"malformed CGI response header line {line[:80]!r}")
        name, value = name.strip(), value.strip()
        if name.lower() == "status":
            code = value.split(" ", 1)[0]
            if not (code.isdigit() and len(code) == 3):
                raise FastCGIError(f"malformed CGI Status header {value!r}")
            status = int(code)
        else:
            headers.append((name, value))
    if status is None:
        status = 302 if any(n.lower() == "location" for n, _ in headers) else 200
    return Response(status, headers, output[pos:])
