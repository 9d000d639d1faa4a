"""One active operator: a coordination.k8s.io Lease held while running. A second operator started
by mistake waits (and says so) until the first one's lease expires, so objects are never
processed twice. Kopf peering is not used: it needs its own CRDs for a job a Lease already does."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import time
from datetime import UTC, datetime, timedelta

from kms_crds.kube import Kube as Http
from kms_crds.kube import KubeError, ns_path

log = logging.getLogger("kms_operator.lease")
LEASE_NAME = "kube-mapserver-operator"


def _now() -> datetime:
    return datetime.now(UTC)


def _fmt(t: datetime) -> str:
    return t.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def lease_namespace() -> str:
    path = "/var/run/secrets/kubernetes.io/serviceaccount/namespace"
    if os.environ.get("KMS_LEASE_NAMESPACE"):
        return os.environ["KMS_LEASE_NAMESPACE"]
    if os.path.exists(path):
        with open(path) as f:
            return f.read().strip()
    return "default"


def _parse(t: str | None) -> datetime | None:
    return datetime.fromisoformat(t.replace("Z", "+00:00")) if t else None


class Lease:
    def __init__(self, http: Http, seconds: int):
        self.http = http
        self.ns = lease_namespace()
        self.seconds = seconds
        self.path = ns_path(self.ns, "leases", None, "coordination.k8s.io/v1")
        # a restarted container of the same pod takes its own lease over at once
        self.identity = os.environ.get("POD_NAME") or f"{socket.gethostname()}-{os.getpid()}"

    def _body(self, rv: str | None, transitions: int) -> dict:
        now = _fmt(_now())
        meta = {"name": LEASE_NAME, "namespace": self.ns, **({"resourceVersion": rv} if rv else {})}
        return {
            "apiVersion": "coordination.k8s.io/v1",
            "kind": "Lease",
            "metadata": meta,
            "spec": {
                "holderIdentity": self.identity,
                "leaseDurationSeconds": self.seconds,
                "acquireTime": now,
                "renewTime": now,
                "leaseTransitions": transitions,
            },
        }

    def try_acquire(self) -> str | None:
        """Take the lease if free or expired; otherwise return who holds it."""
        lease = self.http.get(f"{self.path}/{LEASE_NAME}")
        if lease is None:
            try:
                self.http.call("POST", self.path, self._body(None, 0), limited=False)
                return None
            except KubeError as e:
                if e.status == 409:
                    return "another operator (just created)"
                raise
        spec = lease.get("spec") or {}
        holder = spec.get("holderIdentity") or ""
        renewed = _parse(spec.get("renewTime") or spec.get("acquireTime"))
        expired = (
            not holder
            or renewed is None
            or _now() > renewed + timedelta(seconds=spec.get("leaseDurationSeconds") or self.seconds)
        )
        if holder == self.identity or expired:
            try:
                body = self._body(
                    lease["metadata"]["resourceVersion"], (spec.get("leaseTransitions") or 0) + 1
                )
                self.http.call("PUT", f"{self.path}/{LEASE_NAME}", body, limited=False)
                return None
            except KubeError as e:
                if e.status == 409:
                    return "another operator (conflict)"
                raise
        age = (_now() - renewed).total_seconds() if renewed else -1
        return f"{holder} (renewed {age:.0f}s ago)"

    def wait_for(self) -> None:
        """Block until this process holds the lease, telling why it waits."""
        last = 0.0
        while True:
            holder = self.try_acquire()
            if holder is None:
                log.info("holding lease %s/%s as %s", self.ns, LEASE_NAME, self.identity)
                return
            if time.monotonic() - last > 10:
                log.warning(
                    "another kube-mapserver operator is active: lease %s/%s held by %s; standing by",
                    self.ns,
                    LEASE_NAME,
                    holder,
                )
                last = time.monotonic()
            time.sleep(max(1.0, self.seconds / 3))

    async def keep(self, stop: asyncio.Event) -> None:
        """Renew until told to stop; if the lease is lost, stop the operator (never run twice)."""
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=self.seconds / 3)
            if stop.is_set():
                break
            try:
                holder = await asyncio.to_thread(self.try_acquire)
            except Exception as e:  # the API may be down for a moment: keep trying until expiry
                log.warning("could not renew the lease: %s", e)
                continue
            if holder is not None:
                log.error("lost lease %s/%s to %s: stopping", self.ns, LEASE_NAME, holder)
                os.kill(os.getpid(), 15)
                return

    def release(self) -> None:
        try:
            lease = self.http.get(f"{self.path}/{LEASE_NAME}")
            if lease and (lease.get("spec") or {}).get("holderIdentity") == self.identity:
                lease["spec"]["holderIdentity"] = ""
                self.http.call("PUT", f"{self.path}/{LEASE_NAME}", lease, limited=False)
        except Exception as e:
            log.warning("could not release the lease: %s", e)
