"""Facade settings from the environment (process-level; user-tunable settings live in `config`)."""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path

_SA_NAMESPACE = Path("/var/run/secrets/kubernetes.io/serviceaccount/namespace")
_CPU_MAX = Path("/sys/fs/cgroup/cpu.max")


def usable_cpus(cpu_max: Path = _CPU_MAX) -> int:
    """CPUs this process may use: its affinity, capped by a cgroup v2 CPU quota (a pod's limit)."""
    n = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    try:
        quota, period = cpu_max.read_text().split()[:2]
        if quota != "max":
            n = min(n, math.ceil(int(quota) / int(period)))
    except (OSError, ValueError):
        pass
    return max(1, n)


def _default_namespace() -> str:
    if _SA_NAMESPACE.exists():
        return _SA_NAMESPACE.read_text().strip()
    return "default"


def hash_slots() -> int:
    """Default number of concurrent password checks: argon2 runs its 4 lanes in threads, so one
    check keeps about two CPUs busy; half the usable CPUs leaves room for the other routes."""
    return max(1, usable_cpus() // 2)


@dataclass(frozen=True)
class Settings:
    """Where the facade runs and how it talks to the cluster; see `from_env` for the variables."""

    namespace: str = "default"
    data_root: Path | None = None
    data_pvc: str | None = "map-data"
    upload_dir: str = "uploads"
    job_image: str | None = None
    token_ttl_seconds: int = 3600
    operator_health_url: str | None = None
    request_timeout: float = 10.0
    watch_timeout: int = 60
    health_timeout: float = 1.5
    kube_max_pending: int = 24  # below the web server's thread pool (40): cache reads keep threads
    login_max_failures: int = 5
    login_ip_max_failures: int = 20
    login_window_seconds: int = 60
    login_shared_throttle: bool = True
    hash_concurrency: int = 0  # 0: hash_slots()
    hash_wait_seconds: float = 0.5
    tombstone_max_entries: int = 1000
    tombstone_max_age_seconds: int = 30 * 86400
    preview_concurrency: int = 2  # POST /datasets/preview renders at once (each a mapserv process)
    preview_wait_seconds: float = 2.0  # how long a preview waits for a slot before 503
    preview_timeout_seconds: float = 10.0  # wall clock of one render; the process is killed after it
    preview_cpu_seconds: int = 10  # RLIMIT_CPU of the render process
    preview_memory_mb: int = 512  # RLIMIT_AS of the render process (a 2048x2048 render needs ~300)
    preview_max_size: int = 2048  # largest width/height a preview may ask for
    allowed_url_hosts: tuple[str, ...] = ()  # hosts URL sources may be previewed from (none by default)

    @classmethod
    def from_env(cls, env: dict[str, str] | None = None) -> Settings:
        """KMS_NAMESPACE, KMS_DATA_ROOT, KMS_DATA_PVC, KMS_UPLOAD_DIR, KMS_JOB_IMAGE, KMS_TOKEN_TTL,
        KMS_OPERATOR_HEALTH_URL, KMS_REQUEST_TIMEOUT, KMS_WATCH_TIMEOUT, KMS_KUBE_MAX_PENDING,
        KMS_LOGIN_MAX_FAILURES, KMS_LOGIN_IP_MAX_FAILURES, KMS_LOGIN_WINDOW,
        KMS_LOGIN_SHARED_THROTTLE (false: per-replica throttling only), KMS_HASH_CONCURRENCY
        (password checks at once; default: half the usable CPUs), KMS_HASH_WAIT (seconds a login waits for
        one before 503), KMS_TOMBSTONE_MAX, KMS_TOMBSTONE_MAX_AGE, KMS_PREVIEW_CONCURRENCY,
        KMS_PREVIEW_WAIT, KMS_PREVIEW_TIMEOUT, KMS_PREVIEW_CPU_SECONDS, KMS_PREVIEW_MEMORY_MB,
        KMS_PREVIEW_MAX_SIZE, KMS_ALLOWED_URL_HOSTS (comma list, as the operator's)."""
        e = os.environ if env is None else env
        d = cls()
        data_root = e.get("KMS_DATA_ROOT")
        return cls(
            namespace=e.get("KMS_NAMESPACE") or _default_namespace(),
            data_root=Path(data_root) if data_root else None,
            data_pvc=e.get("KMS_DATA_PVC", d.data_pvc) or None,
            upload_dir=e.get("KMS_UPLOAD_DIR", d.upload_dir).strip("/") or d.upload_dir,
            job_image=e.get("KMS_JOB_IMAGE") or None,
            token_ttl_seconds=int(e.get("KMS_TOKEN_TTL", d.token_ttl_seconds)),
            operator_health_url=e.get("KMS_OPERATOR_HEALTH_URL") or None,
            request_timeout=float(e.get("KMS_REQUEST_TIMEOUT", d.request_timeout)),
            watch_timeout=int(e.get("KMS_WATCH_TIMEOUT", d.watch_timeout)),
            kube_max_pending=max(1, int(e.get("KMS_KUBE_MAX_PENDING", d.kube_max_pending))),
            login_max_failures=int(e.get("KMS_LOGIN_MAX_FAILURES", d.login_max_failures)),
            login_ip_max_failures=int(e.get("KMS_LOGIN_IP_MAX_FAILURES", d.login_ip_max_failures)),
            login_window_seconds=int(e.get("KMS_LOGIN_WINDOW", d.login_window_seconds)),
            login_shared_throttle=e.get("KMS_LOGIN_SHARED_THROTTLE", "true").strip().lower()
            not in ("0", "false", "no", "off"),
            hash_concurrency=max(0, int(e.get("KMS_HASH_CONCURRENCY", d.hash_concurrency))),
            hash_wait_seconds=max(0.0, float(e.get("KMS_HASH_WAIT", d.hash_wait_seconds))),
            tombstone_max_entries=int(e.get("KMS_TOMBSTONE_MAX", d.tombstone_max_entries)),
            tombstone_max_age_seconds=int(e.get("KMS_TOMBSTONE_MAX_AGE", d.tombstone_max_age_seconds)),
            preview_concurrency=max(1, int(e.get("KMS_PREVIEW_CONCURRENCY", d.preview_concurrency))),
            preview_wait_seconds=max(0.0, float(e.get("KMS_PREVIEW_WAIT", d.preview_wait_seconds))),
            preview_timeout_seconds=max(0.5, float(e.get("KMS_PREVIEW_TIMEOUT", d.preview_timeout_seconds))),
            preview_cpu_seconds=max(1, int(e.get("KMS_PREVIEW_CPU_SECONDS", d.preview_cpu_seconds))),
            preview_memory_mb=max(64, int(e.get("KMS_PREVIEW_MEMORY_MB", d.preview_memory_mb))),
            preview_max_size=max(16, int(e.get("KMS_PREVIEW_MAX_SIZE", d.preview_max_size))),
            allowed_url_hosts=tuple(
                h.strip() for h in e.get("KMS_ALLOWED_URL_HOSTS", "").split(",") if h.strip()
            ),
        )
