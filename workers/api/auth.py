"""Who is calling and may they: a database session per request, token auth, roles.

Scripts send `Authorization: Bearer <token>`. The console keeps either a token or,
for an operator account signed in with its password, a console session secret in
an HttpOnly, SameSite=Strict cookie; a state-changing request that relies on the
cookie must also carry the X-Clad-Console header, which another site's page
cannot add without a CORS preflight we never grant.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import datetime
from typing import Annotated

from fastapi import Depends, Request
from sqlalchemy.orm import Session

from pipeline.storage.tokens import Principal, role_allows, verify_token
from pipeline.storage.users import SESSION_PREFIX, verify_session
from workers.api.errors import ApiError

COOKIE = "clad_token"
CONSOLE_HEADER = "x-clad-console"
_SAFE = {"GET", "HEAD", "OPTIONS"}


def get_session(request: Request) -> Iterator[Session]:
    """One transaction per request: committed when the route returns, else rolled back."""
    with request.app.state.sessions() as session, session.begin():
        yield session


# scope="function": the commit runs before the response is sent, so a commit that
# fails is the client's error (503), never a 201 for a label that was not stored.
# FastAPI's default scope runs the code after `yield` once the response is out.
SessionDep = Annotated[Session, Depends(get_session, scope="function")]


def presented_secret(request: Request) -> str | None:
    header = request.headers.get("authorization")
    if header is not None:
        scheme, _, secret = header.partition(" ")
        if scheme.lower() != "bearer" or not secret.strip():
            raise ApiError(401, "expected 'Authorization: Bearer <token>'",
                           headers={"WWW-Authenticate": "Bearer"})
        return secret.strip()
    cookie = request.cookies.get(COOKIE)
    if cookie and request.method not in _SAFE and request.headers.get(CONSOLE_HEADER) != "1":
        raise ApiError(403, "cookie-authenticated changes need the console header",
                       code="csrf")
    return cookie


def verify_secret(session: Session, secret: str, now: datetime) -> Principal | None:
    """The caller behind a token or a console session secret, or None."""
    if secret.startswith(SESSION_PREFIX):
        return verify_session(session, secret, now=now)
    return verify_token(session, secret, now=now)


def current_principal(request: Request, session: SessionDep) -> Principal:
    secret = presented_secret(request)
    principal = verify_secret(session, secret, request.app.state.clock()) if secret else None
    if principal is None:
        raise ApiError(401, "missing, unknown, revoked or expired token",
                       headers={"WWW-Authenticate": "Bearer"})
    request.state.principal = principal
    return principal


def require(role: str) -> Callable[..., Principal]:
    """Dependency: the caller, if their role is at least `role`; else 401/403."""

    def _check(principal: Annotated[Principal, Depends(current_principal)]) -> Principal:
        if not role_allows(principal.role, role):
            raise ApiError(403, f"this needs the {role} role")
        return principal

    _check.__name__ = f"require_{role}"
    return _check
