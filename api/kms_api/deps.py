"""Dependencies: the per-app context, the CR client, the current user and role checks."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import OAuth2PasswordBearer

from .auth import (
    RANK,
    HashGate,
    InvalidToken,
    LoginThrottle,
    Role,
    Tokens,
    User,
    parse_users,
    password_version,
)
from .config import ConfigStore
from .crclient import CRClient
from .errors import Problem
from .settings import Settings
from .throttle import SharedThrottle
from .tombstones import Tombstones

BEARER = {"WWW-Authenticate": "Bearer"}
oauth2 = OAuth2PasswordBearer(tokenUrl="token", auto_error=False)


@dataclass
class Context:
    """Everything a request may need; one per app, created by the app factory."""

    settings: Settings
    cr: CRClient
    config: ConfigStore
    tombstones: Tombstones
    throttle: LoginThrottle  # this replica's (also the fallback when the apiserver is unavailable)
    gate: HashGate
    shared: SharedThrottle | None = None  # every replica's, in Leases
    preview_gate: HashGate | None = None  # POST /datasets/preview renders at once (create_app sets it)

    def __post_init__(self) -> None:
        if self.preview_gate is None:
            s = self.settings
            self.preview_gate = HashGate(s.preview_concurrency, s.preview_wait_seconds)

    def tokens(self) -> Tokens:
        key = self.cr.secret_data(self.cr.jwt).get("signing-key") or self.cr.ensure_jwt_key()
        return Tokens(key, self.settings.token_ttl_seconds)

    def users(self) -> dict[str, User]:
        if not self.cr.users.synced.is_set():
            raise Problem(503, "the user list is not loaded yet", headers={"Retry-After": "2"})
        return parse_users(self.cr.secret_data(self.cr.users))


def context(request: Request) -> Context:
    return request.app.state.ctx


Ctx = Annotated[Context, Depends(context)]


def current_user(request: Request, token: Annotated[str | None, Depends(oauth2)], ctx: Ctx) -> User:
    """The user of a valid bearer token who still exists with the same password; 401 otherwise."""
    if not token:
        raise Problem(401, "not authenticated: send a bearer token from POST /token", headers=BEARER)
    try:
        claims = ctx.tokens().decode(token)
    except InvalidToken as e:
        raise Problem(401, f"invalid token ({e})", headers=BEARER) from None
    user = ctx.users().get(str(claims.get("sub")))
    if user is None or claims.get("pwv") != password_version(user.password_hash):
        raise Problem(401, "invalid token (the user no longer exists or changed password)", headers=BEARER)
    request.state.user = user.name
    return user


def require(role: Role) -> Callable[..., User]:
    """A dependency that lets users of `role` or higher through (403 for lower roles)."""

    def check(user: Annotated[User, Depends(current_user)]) -> User:
        if RANK[user.role] < RANK[role]:
            raise Problem(403, f"this needs the {role} role; {user.name} is {user.role}")
        return user

    check.__name__ = f"require_{role}"
    return check


viewer = require("viewer")
editor = require("editor")
admin = require("admin")

CurrentUser = Annotated[User, Depends(current_user)]
ViewerUser = Annotated[User, Depends(viewer)]
EditorUser = Annotated[User, Depends(editor)]
AdminUser = Annotated[User, Depends(admin)]
