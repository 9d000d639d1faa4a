"""POST /token (OAuth2 password form), POST /login (JSON or form), GET /users, GET /me."""

from __future__ import annotations

import json
import logging
from typing import Annotated

from fastapi import APIRouter, Form, Request
from pydantic import ValidationError
from starlette.concurrency import run_in_threadpool

from kms_crds.kube import KubeError

from ..auth import Busy, verify_password
from ..deps import AdminUser, Context, Ctx, CurrentUser
from ..errors import Problem, field_of
from ..models import ErrorBody, LoginRequest, Token, UserView
from ..observability import LOGINS
from ..throttle import FALLBACKS, Contended

log = logging.getLogger("kms_api.auth")
router = APIRouter(tags=["auth"])
THROTTLED = {
    429: {"model": ErrorBody, "description": "Too many failed logins; see Retry-After."},
    503: {
        "model": ErrorBody,
        "description": "Too many logins being checked at once, or the users are not loaded yet; "
        "see Retry-After.",
    },
}


def client_ip(request: Request) -> str:
    return request.client.host if request.client else "unknown"


def _throttled(username: str, ip: str, wait: int) -> Problem:
    LOGINS.labels("throttled").inc()
    log.warning("login throttled for user %r from %s (retry in %ss)", username, ip, wait)
    return Problem(429, "too many failed logins; try again later", headers={"Retry-After": str(wait)})


def _reserve(ctx: Context, username: str, ip: str) -> tuple[int | None, float | None]:
    """Take this attempt's slot in the shared (cluster) throttle: (wait, None) when throttled,
    (None, stamp) when taken, (None, None) when only this replica's throttle applies."""
    if ctx.shared is None:
        return None, None
    try:
        return ctx.shared.reserve(username, ip)
    except Contended as e:
        log.warning("login of %r from %s: %s", username, ip, e)
        raise Busy from None
    except KubeError as e:  # never locked out, never unthrottled: this replica's throttle applies
        FALLBACKS.inc()
        log.warning("shared login throttle unavailable (%s); this replica's throttle applies alone", e)
        return None, None


def _release(ctx: Context, username: str, ip: str, stamp: float) -> None:
    try:
        ctx.shared.release(username, ip, stamp)  # type: ignore[union-attr]
    except (KubeError, Contended) as e:
        log.warning("could not clear the login throttle of %r: %s", username, e)


async def _login(ctx: Context, username: str, password: str, ip: str) -> Token:
    """Throttle checks from memory and the cache, then (in a bounded hashing slot) an attempt slot
    taken in the cluster and the password check."""
    users = ctx.users()  # 503 before anything is counted when they are not loaded yet
    wait = ctx.throttle.retry_after(username, ip)
    if not wait and ctx.shared is not None:
        wait = ctx.shared.cached_retry_after(username, ip)
    if wait:
        raise _throttled(username, ip, wait)
    user = users.get(username)
    try:
        async with ctx.gate.slot():
            wait, stamp = await run_in_threadpool(_reserve, ctx, username, ip)
            if wait:
                raise _throttled(username, ip, wait)
            ok = await run_in_threadpool(verify_password, user.password_hash if user else None, password)
    except Busy:
        LOGINS.labels("busy").inc()
        raise Problem(
            503, "too many logins are being checked; try again shortly", headers={"Retry-After": "1"}
        ) from None
    if not ok or user is None:
        ctx.throttle.failed(username, ip)
        LOGINS.labels("failed").inc()
        log.warning("failed login for user %r from %s", username, ip)
        raise Problem(401, "wrong username or password", headers={"WWW-Authenticate": "Bearer"})
    ctx.throttle.succeeded(username)
    if stamp is not None:
        await run_in_threadpool(_release, ctx, username, ip, stamp)
    tokens = await run_in_threadpool(ctx.tokens)
    LOGINS.labels("ok").inc()
    log.info("login of %r (%s) from %s", user.name, user.role, ip)
    return Token(access_token=tokens.issue(user), expires_in=tokens.ttl, role=user.role)


@router.post("/token", response_model=Token, responses=THROTTLED, summary="OAuth2 password grant")
async def token(
    request: Request,
    username: Annotated[str, Form(min_length=1, max_length=256)],
    password: Annotated[str, Form(min_length=1, max_length=1024)],
    ctx: Ctx,
    grant_type: Annotated[str | None, Form(pattern="^password$")] = None,
) -> Token:
    return await _login(ctx, username, password, client_ip(request))


_LOGIN_SCHEMA = LoginRequest.model_json_schema(by_alias=True)
LOGIN_BODY = {
    "requestBody": {
        "required": True,
        "content": {
            "application/json": {"schema": _LOGIN_SCHEMA},
            "application/x-www-form-urlencoded": {"schema": _LOGIN_SCHEMA},
        },
    }
}


@router.post(
    "/login",
    response_model=Token,
    responses=THROTTLED,
    openapi_extra=LOGIN_BODY,
    summary="Log in with JSON or a form",
)
async def login(request: Request, ctx: Ctx) -> Token:
    ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
    try:
        if ctype in ("application/x-www-form-urlencoded", "multipart/form-data"):
            form = await request.form()
            raw: object = {k: v for k, v in form.items() if isinstance(v, str)}
        else:
            raw = json.loads(await request.body() or b"null")
    except (ValueError, UnicodeDecodeError):
        raise Problem(422, "the body must be JSON or a form with username and password") from None
    except Exception as e:  # malformed multipart and the like
        raise Problem(422, f"unreadable form: {type(e).__name__}") from None
    try:
        body = LoginRequest.model_validate(raw)
    except ValidationError as e:
        err = e.errors()[0]
        field = field_of(err["loc"]) or "body"
        raise Problem(422, f"{field}: {err['msg']}", field) from None
    return await _login(ctx, body.username, body.password, client_ip(request))


@router.get("/me", response_model=UserView, summary="The user of the token")
def me(user: CurrentUser) -> UserView:
    return UserView(name=user.name, role=user.role)


@router.get("/users", response_model=list[UserView], summary="Users and their roles (admin)")
def users(_: AdminUser, ctx: Ctx) -> list[UserView]:
    return [UserView(name=u.name, role=u.role) for u in sorted(ctx.users().values(), key=lambda u: u.name)]
