"""`python -m kms_api [--host H] [--port P]` serves the facade; `python -m kms_api user ...` edits users."""

from __future__ import annotations

import argparse
import sys


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["user"]:
        from .users_cli import run

        return run(argv[1:])
    p = argparse.ArgumentParser(prog="python -m kms_api", description="kube-mapserver facade")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--log-level", default="info")
    p.add_argument(
        "--forwarded-allow-ips",
        default=None,
        help="trust X-Forwarded-For from these proxies (comma list), e.g. the ingress; default: trust none",
    )
    a = p.parse_args(argv)

    import logging

    import uvicorn

    from .main import create_app
    from .observability import setup_logging

    setup_logging(getattr(logging, a.log_level.upper(), logging.INFO))
    uvicorn.run(
        create_app(),
        host=a.host,
        port=a.port,
        access_log=False,
        log_config=None,
        proxy_headers=a.forwarded_allow_ips is not None,
        forwarded_allow_ips=a.forwarded_allow_ips,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
