"""`python -m kms_api user add|reset|delete|list NAME --role R [--password-stdin | --password-file F]`:
edit the users Secret."""

from __future__ import annotations

import argparse
import getpass
import sys

from kms_crds.kube import Kube, KubeError, ns_path

from .auth import ROLES, USERNAME, hash_password, parse_users, user_entry
from .crclient import LABELS, USERS_SECRET, decode_secret, encode
from .settings import Settings


def _read_password(from_stdin: bool, path: str | None = None) -> str:
    if path:  # a mounted Secret: the whole file, without a trailing newline
        try:
            with open(path, encoding="utf-8") as f:
                password = f.read().removesuffix("\n")
        except OSError as e:
            raise SystemExit(f"cannot read the password file: {e.strerror}") from None
    elif from_stdin:
        password = sys.stdin.readline().rstrip("\n")
    else:
        password = getpass.getpass("password: ")
        if getpass.getpass("again: ") != password:
            raise SystemExit("passwords differ")
    if len(password) < 8:
        raise SystemExit("the password needs at least 8 characters")
    return password


def _write(kube: Kube, ns: str, patch: dict) -> None:
    path = ns_path(ns, "secrets", USERS_SECRET)
    if kube.get(path) is None:
        body = {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": USERS_SECRET, "labels": {**LABELS, "app.kubernetes.io/component": "facade"}},
            "type": "Opaque",
            "data": {k: v for k, v in patch.items() if v is not None},
        }
        try:
            kube.call("POST", ns_path(ns, "secrets"), body)
            return
        except KubeError as e:
            if e.status != 409:
                raise
    kube.call("PATCH", path, {"data": patch}, content_type="application/merge-patch+json")


def run(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="python -m kms_api user", description=__doc__)
    p.add_argument("action", choices=["add", "reset", "delete", "list"])
    p.add_argument("name", nargs="?")
    p.add_argument("--role", choices=ROLES, help="role (add: default viewer; reset: keep unless given)")
    how = p.add_mutually_exclusive_group()
    how.add_argument("--password-stdin", action="store_true", help="read the password from stdin")
    how.add_argument("--password-file", metavar="FILE", help="read the password from FILE (a mounted Secret)")
    p.add_argument("--namespace", "-n", help="namespace (default: KMS_NAMESPACE)")
    a = p.parse_args(argv)
    ns = a.namespace or Settings.from_env().namespace
    kube = Kube.from_environment()
    current = parse_users(decode_secret(kube.get(ns_path(ns, "secrets", USERS_SECRET))))
    if a.action == "list":
        for u in sorted(current.values(), key=lambda u: u.name):
            print(f"{u.name}\t{u.role}")
        return 0
    if not a.name or not USERNAME.match(a.name):
        p.error("NAME must be 1-63 lowercase letters, digits, '.', '_' or '-'")
    if a.action == "delete":
        if a.name not in current:
            print(f"no user {a.name}", file=sys.stderr)
            return 1
        _write(kube, ns, {a.name: None})
        print(f"deleted user {a.name}")
        return 0
    if a.action == "add" and a.name in current:
        print(f"user {a.name} exists; use reset", file=sys.stderr)
        return 1
    if a.action == "reset" and a.name not in current:
        print(f"no user {a.name}; use add", file=sys.stderr)
        return 1
    role = a.role or (current[a.name].role if a.name in current else "viewer")
    password = _read_password(a.password_stdin, a.password_file)
    _write(kube, ns, {a.name: encode(user_entry(hash_password(password), role))})
    print(f"{'added' if a.action == 'add' else 'reset'} user {a.name} ({role})")
    return 0
