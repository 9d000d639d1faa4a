"""Tombstones of deleted MapJobs, kept in ConfigMap kube-mapserver-tombstones with bounded retention."""

from __future__ import annotations

import json
import logging
from datetime import UTC, datetime, timedelta

from kms_crds.kube import KubeError

from .crclient import TOMBSTONES_MAP, CRClient
from .errors import Problem

log = logging.getLogger("kms_api.tombstones")
KEY = "tombstones.json"


def now_rfc3339() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_time(value: str | None) -> datetime | None:
    if not value:
        return None
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None


def retain(entries: list[dict], now: datetime, max_entries: int, max_age_seconds: int) -> list[dict]:
    """Newest last; drop entries older than max age, then keep at most max_entries (the newest)."""
    cutoff = now - timedelta(seconds=max_age_seconds)
    kept = [e for e in entries if (t := parse_time(e.get("deletedAt"))) is None or t >= cutoff]
    return kept[-max_entries:] if max_entries > 0 else []


def parse(data: dict[str, str]) -> list[dict]:
    try:
        entries = json.loads(data.get(KEY) or "[]")
    except ValueError:
        log.warning("ConfigMap %s holds invalid JSON; starting a new list", TOMBSTONES_MAP)
        return []
    return [e for e in entries if isinstance(e, dict) and isinstance(e.get("id"), str)]


class Tombstones:
    def __init__(self, cr: CRClient, max_entries: int, max_age_seconds: int):
        self.cr, self.max_entries, self.max_age = cr, max_entries, max_age_seconds

    def list(self) -> list[dict]:
        """Newest first, retention applied on read too."""
        data, _ = self.cr.configmap_data(self.cr.tombstones)
        kept = retain(parse(data), datetime.now(UTC), self.max_entries, self.max_age)
        return list(reversed(kept))

    def add(self, new: list[dict]) -> None:
        """Append entries (optimistic concurrency: re-read and retry on a conflict)."""
        if not new:
            return
        data, rv = self.cr.configmap_data(self.cr.tombstones)
        for _ in range(8):
            entries = retain(parse(data) + new, datetime.now(UTC), self.max_entries, self.max_age)
            try:
                self.cr.write_configmap(self.cr.tombstones, TOMBSTONES_MAP, {KEY: json.dumps(entries)}, rv)
                return
            except KubeError as e:
                if e.status != 409:
                    raise
            data, rv = self.cr.read_configmap_live(self.cr.tombstones, TOMBSTONES_MAP)
        raise Problem(409, "could not record the tombstone: the tombstone list kept changing")
