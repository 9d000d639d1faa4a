"""`kube-mapserver-job <type> --params-json '<json>'`: run one MapJob step inside the job pod.

Exit codes: 0 success (result JSON on stdout and in the termination log), 2 bad input, 1 unexpected
failure; on failure the termination log holds {"type", "error"}."""

from __future__ import annotations

import argparse
import importlib
import json
import os
import sys
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any, get_type_hints

from pydantic import BaseModel, ValidationError

from kms_crds.job_types import JOB_TYPES

from .paths import DEFAULT_DATA_ROOT, DataRoot
from .result import JobError, Logger, report
from .tilecache import DEFAULT_CACHE_ROOT, CacheRoot

DEFAULT_TERMINATION_LOG = "/dev/termination-log"

# (params, root, log) -> result; root is a DataRoot, or a CacheRoot for the CACHE_JOBS
Runner = Callable[[Any, Any, Logger], dict[str, Any]]


def _runners() -> dict[str, tuple[type[BaseModel], Runner]]:
    """job type -> (params model, runner), for every type of the registry `kms_crds.job_types`: its
    `runner` names "<module>:<function>" here, and the model is the function's `params` annotation."""
    out = {}
    for t in JOB_TYPES:
        module, function = t.runner.split(":")
        fn = getattr(importlib.import_module(f"{__package__}.{module}"), function)
        out[t.name] = (get_type_hints(fn)["params"], fn)
    return out


JOBS = _runners()
CACHE_JOBS = {t.name for t in JOB_TYPES if t.cache_volume}  # on the tile cache volume, not the data root


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="kube-mapserver-job",
        description="Run one kube-mapserver MapJob (reads and writes files under the data root only).",
        epilog="job types:\n" + "\n".join(f"  {t.name:<16} {t.description}" for t in JOB_TYPES),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("type", choices=sorted(JOBS), help="job type (MapJob spec.type)")
    p.add_argument("--params-json", required=True, help="the job's parameters as JSON (camelCase)")
    p.add_argument(
        "--data-root",
        default=os.environ.get("KMS_DATA_ROOT", DEFAULT_DATA_ROOT),
        help="directory every path is relative to (default: $KMS_DATA_ROOT or %(default)s)",
    )
    p.add_argument(
        "--cache-root",
        default=os.environ.get("KMS_CACHE_ROOT", DEFAULT_CACHE_ROOT),
        help="MapCache tile cache volume for cache-* jobs; /var/cache/mapcache in their configXml is "
        "rewritten to it (default: $KMS_CACHE_ROOT or %(default)s)",
    )
    p.add_argument(
        "--termination-log",
        default=os.environ.get("KMS_TERMINATION_LOG", DEFAULT_TERMINATION_LOG),
        help="file the JSON result is written to (default: $KMS_TERMINATION_LOG or %(default)s)",
    )
    return p


PATH_FIELDS = {"input", "inputs", "output", "path", "paths", "pathPrefix"}


def _escapes(path: str) -> bool:
    """An absolute path or one with '..' segments (refused by the CRD's DataPath validation)."""
    return path.startswith(("/", "\\")) or ".." in path.replace("\\", "/").split("/")


def _validation_message(err: ValidationError) -> str:
    """One line per problem, `field.path: message`; an absolute or '..' path reads as what it is."""
    lines = []
    for e in err.errors(include_url=False):
        where = ".".join(str(part) for part in e["loc"]) or "params"
        value = e.get("input")
        if isinstance(value, str) and PATH_FIELDS & set(e["loc"]) and _escapes(value):
            lines.append(
                f"{where}: path {value!r} is outside the data root (paths must be relative, without '..')"
            )
        else:
            lines.append(f"{where}: {e['msg']}")
    return "invalid params: " + "; ".join(lines)


def parse_params(job_type: str, raw: str) -> BaseModel:
    model, _ = JOBS[job_type]
    try:
        data = json.loads(raw)
    except json.JSONDecodeError as e:
        raise JobError(f"--params-json is not valid JSON: {e}") from None
    if not isinstance(data, dict):
        raise JobError("--params-json must be a JSON object")
    try:
        return model.model_validate(data)
    except ValidationError as e:
        raise JobError(_validation_message(e)) from None


def _gdal_setup(log: Logger) -> Callable[[], None]:
    """Raise GDAL errors as exceptions and log its warnings as JSON lines; returns the undo."""
    from osgeo import gdal

    def handler(level: int, _code: int, msg: str) -> None:
        if level == gdal.CE_Warning:
            log.warning("GDAL: " + msg.strip())

    gdal.UseExceptions()
    gdal.PushErrorHandler(handler)
    return gdal.PopErrorHandler


def run(
    job_type: str, params_json: str, data_root: str, log: Logger, cache_root: str = DEFAULT_CACHE_ROOT
) -> dict[str, Any]:
    """Validate, run the job and return its result (without "type"); JobError for bad input."""
    params = parse_params(job_type, params_json)
    root = CacheRoot(cache_root) if job_type in CACHE_JOBS else DataRoot(data_root)
    _, runner = JOBS[job_type]
    return runner(params, root, log)


def main(argv: list[str] | None = None) -> int:
    try:
        args = parser().parse_args(argv)
    except SystemExit as e:  # --help, or a usage error (already printed by argparse)
        return e.code if isinstance(e.code, int) else 2
    log = Logger()
    termination_log = Path(args.termination_log)
    undo = _gdal_setup(log)
    try:
        if args.type in CACHE_JOBS:
            log.info("job started", type=args.type, cacheRoot=args.cache_root)
        else:
            log.info("job started", type=args.type, dataRoot=args.data_root)
        result = run(args.type, args.params_json, args.data_root, log, args.cache_root)
    except JobError as e:
        return _fail(args.type, str(e), 2, termination_log, log)
    except Exception as e:
        log.log("error", "unexpected failure", traceback=traceback.format_exc())
        return _fail(args.type, f"{type(e).__name__}: {e}", 1, termination_log, log)
    finally:
        undo()
    log.info("job succeeded", type=args.type)
    report({"type": args.type, **result}, termination_log, log)
    return 0


def _fail(job_type: str, message: str, code: int, termination_log: Path, log: Logger) -> int:
    message = " ".join(message.split()) or "failed"
    print(f"error: {message}", file=sys.stderr, flush=True)
    report({"type": job_type, "error": message}, termination_log, log, stdout=False)
    return code
