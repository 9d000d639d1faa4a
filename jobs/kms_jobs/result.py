"""Reporting: structured progress logs on stderr and the JSON result in the termination log."""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TextIO

MAX_RESULT_BYTES = 4096  # what the kubelet keeps of a termination message
MAX_MESSAGE_CHARS = 2000


class JobError(Exception):
    """Bad input (missing file, unknown variable, invalid params, ...): the job fails with exit code 2."""


class Logger:
    """One JSON object per line on stderr: {"ts", "level", "msg", ...extra fields}."""

    def __init__(self, stream: TextIO | None = None):
        self.stream = stream

    def log(self, level: str, msg: str, **fields: Any) -> None:
        line = {"ts": round(time.time(), 3), "level": level, "msg": msg, **fields}
        stream = self.stream or sys.stderr
        stream.write(json.dumps(line, separators=(",", ":"), default=str) + "\n")
        stream.flush()

    def info(self, msg: str, **fields: Any) -> None:
        self.log("info", msg, **fields)

    def warning(self, msg: str, **fields: Any) -> None:
        self.log("warning", msg, **fields)

    def progress(self, msg: str, step: float = 0.1) -> Callable[..., int]:
        """A GDAL progress callback logging `msg` with the fraction done, at most every `step`."""
        last = [-1.0]

        def callback(complete: float, _message: Any = None, _data: Any = None) -> int:
            due = complete >= 1.0 or complete - last[0] >= step - 1e-9
            if due and complete != last[0]:
                last[0] = complete
                self.info(msg, progress=round(min(max(complete, 0.0), 1.0), 3))
            return 1

        return callback


def _dumps(obj: Any) -> str:
    return json.dumps(obj, separators=(",", ":"), sort_keys=False, default=str)


def _shrink(container: list | dict, keep: int) -> list | dict:
    if isinstance(container, list):
        return container[:keep]
    return dict(list(container.items())[:keep])


def fit(result: dict[str, Any], limit: int = MAX_RESULT_BYTES) -> dict[str, Any]:
    """`result` itself if its JSON fits in `limit` bytes, else a copy with its largest lists/dicts cut
    (keeping as many leading entries as fit) and "truncated": true."""
    if len(_dumps(result).encode()) <= limit:
        return result
    out = dict(result)
    for key, value in out.items():  # an overlong message must not crowd out everything else
        if isinstance(value, str) and len(value) > MAX_MESSAGE_CHARS:
            out[key] = value[: MAX_MESSAGE_CHARS - 3] + "..."
    out["truncated"] = True
    while len(_dumps(out).encode()) > limit:
        sized = [(len(_dumps(v)), k) for k, v in out.items() if isinstance(v, list | dict) and len(v) > 0]
        if not sized:
            break
        _, key = max(sized)
        full = out[key]
        lo, hi = 0, len(full) - 1  # largest number of leading entries that fits (binary search)
        while lo < hi:
            mid = (lo + hi + 1) // 2
            out[key] = _shrink(full, mid)
            if len(_dumps(out).encode()) <= limit:
                lo = mid
            else:
                hi = mid - 1
        out[key] = _shrink(full, lo)
    return out


def report(result: dict[str, Any], termination_log: Path, log: Logger, stdout: bool = True) -> str:
    """Write the (fitted) result to the termination log and, on success, to stdout. Returns the JSON."""
    text = _dumps(fit(result))
    try:
        termination_log.write_text(text)
    except OSError as e:  # e.g. a local run without /dev/termination-log: the result is still on stdout
        log.warning(f"cannot write the termination log {termination_log}: {e.strerror or e}")
    if stdout:
        print(text, flush=True)
    return text
