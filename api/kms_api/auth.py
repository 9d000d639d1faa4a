"""Users (argon2 hashes + role, in a Secret), signed expiring JWTs, and login throttling."""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import re
import threading
import time
from collections import deque
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any, Literal

import jwt
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

log = logging.getLogger("kms_api.auth")

Role = Literal["viewer", "editor", "admin"]
ROLES: tuple[Role, ...] = ("viewer", "editor", "admin")
RANK = {r: i for i, r in enumerate(ROLES)}
USERNAME = re.compile(r"^[a-z0-9][a-z0-9._-]{0,62}$")
ALGORITHM = "HS256"
ISSUER = "kube-mapserver"

_hasher = PasswordHasher()
_DUMMY_HASH = _hasher.hash("dummy password for unknown users")


def hash_password(password: str) -> str:
    return _hasher.hash(password)


def verify_password(stored_hash: str | None, password: str) -> bool:
    """Constant-ish time: an unknown user is checked against a dummy hash, so it takes as long."""
    try:
        return _hasher.verify(stored_hash or _DUMMY_HASH, password) and stored_hash is not None
    except (VerifyMismatchError, VerificationError, InvalidHashError):
        return False


class Busy(Exception):
    """No password-check slot came free in time."""


class HashGate:
    """At most `slots` password checks at once (argon2 takes a CPU and 64 MiB each); a login waits
    up to `wait` seconds for a slot, in the event loop (no worker thread is held), else Busy."""

    def __init__(self, slots: int, wait: float):
        self.slots, self.wait = max(1, slots), wait
        self._sem: asyncio.Semaphore | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self.busy = 0

    def _semaphore(self) -> asyncio.Semaphore:
        """The semaphore of the serving loop (made there: one loop per server)."""
        loop = asyncio.get_running_loop()
        if self._sem is None or self._loop is not loop:
            self._sem, self._loop = asyncio.Semaphore(self.slots), loop
        return self._sem

    @asynccontextmanager
    async def slot(self) -> AsyncIterator[None]:
        sem = self._semaphore()
        try:
            if self.wait <= 0 and sem.locked():
                raise TimeoutError
            await asyncio.wait_for(sem.acquire(), self.wait or None)
        except TimeoutError:
            self.busy += 1
            raise Busy from None
        try:
            yield
        finally:
            sem.release()


def password_version(stored_hash: str) -> str:
    """Changes when the password is reset, so older tokens stop working."""
    return hashlib.sha256(stored_hash.encode()).hexdigest()[:16]


@dataclass(frozen=True)
class User:
    name: str
    role: Role
    password_hash: str


def parse_users(data: dict[str, str]) -> dict[str, User]:
    """Secret data (one key per user, value JSON {hash, role}) → users; malformed entries skipped."""
    users = {}
    for name, raw in data.items():
        try:
            entry = json.loads(raw)
            role = entry["role"]
            if role in RANK and isinstance(entry["hash"], str):
                users[name] = User(name, role, entry["hash"])
        except (ValueError, KeyError, TypeError):
            log.warning("ignoring malformed user entry %r in the users Secret", name)
    return users


def user_entry(password_hash: str, role: Role) -> str:
    return json.dumps({"hash": password_hash, "role": role})


class InvalidToken(Exception):
    pass


class Tokens:
    """HS256 JWTs: sub, role, pwv (password version), iat, exp, iss."""

    def __init__(self, key: str, ttl_seconds: int):
        self.key, self.ttl = key, ttl_seconds

    def issue(self, user: User) -> str:
        now = int(time.time())
        claims = {
            "sub": user.name,
            "role": user.role,
            "pwv": password_version(user.password_hash),
            "iat": now,
            "exp": now + self.ttl,
            "iss": ISSUER,
        }
        return jwt.encode(claims, self.key, algorithm=ALGORITHM)

    def decode(self, token: str) -> dict[str, Any]:
        try:
            return jwt.decode(
                token,
                self.key,
                algorithms=[ALGORITHM],
                issuer=ISSUER,
                options={"require": ["sub", "exp", "iat", "pwv"]},
            )
        except jwt.PyJWTError as e:
            raise InvalidToken(type(e).__name__) from None


class LoginThrottle:
    """Failed logins per username and per client address in a sliding window (in memory)."""

    MAX_KEYS = 10000

    def __init__(self, max_user: int, max_ip: int, window: float):
        self.max_user, self.max_ip, self.window = max_user, max_ip, window
        self._fails: dict[str, deque[float]] = {}
        self._lock = threading.Lock()

    def _recent(self, key: str, now: float) -> deque[float]:
        q = self._fails.get(key) or deque()
        while q and q[0] <= now - self.window:
            q.popleft()
        return q

    def retry_after(self, username: str, ip: str, now: float | None = None) -> int | None:
        """Seconds to wait when this user or this address is throttled, else None."""
        now = time.monotonic() if now is None else now
        with self._lock:
            waits = []
            for key, limit in ((f"u:{username}", self.max_user), (f"ip:{ip}", self.max_ip)):
                q = self._recent(key, now)
                if len(q) >= limit:
                    waits.append(q[-limit] + self.window - now)
            return max(1, int(max(waits)) + 1) if waits else None

    def failed(self, username: str, ip: str, now: float | None = None) -> None:
        now = time.monotonic() if now is None else now
        with self._lock:
            if len(self._fails) > self.MAX_KEYS:
                for key in [k for k, q in self._fails.items() if not q or q[-1] <= now - self.window]:
                    del self._fails[key]
                while len(self._fails) > self.MAX_KEYS:
                    del self._fails[next(iter(self._fails))]
            for key in (f"u:{username}", f"ip:{ip}"):
                q = self._recent(key, now)
                q.append(now)
                self._fails[key] = q

    def succeeded(self, username: str) -> None:
        with self._lock:
            self._fails.pop(f"u:{username}", None)
