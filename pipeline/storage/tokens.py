"""API tokens: random secrets shown once, stored as sha256, each with one role and an expiry.

Roles are ordered viewer < operator < admin; a route names the least role it
needs. A plain sha256 suffices (no slow KDF) because the tokens are 256 random
bits, not passwords a person chose.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import select
from sqlalchemy.orm import Session

from pipeline.storage.models import ROLES, ApiToken, utcnow

TOKEN_PREFIX = "clad_"
_RANK = {role: rank for rank, role in enumerate(ROLES)}


@dataclass(frozen=True)
class Principal:
    """Who is calling: recorded as the author of labels. A token's, or (token_id None)
    an operator account's signed in to the console (pipeline/storage/users.py)."""

    token_id: int | None
    name: str
    role: str


def hash_token(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def new_secret() -> str:
    # The prefix makes a leaked token recognisable to secret scanners.
    return TOKEN_PREFIX + secrets.token_urlsafe(32)


def role_allows(role: str, required: str) -> bool:
    """Whether `role` may do what needs `required`; unknown roles may do nothing."""
    if required not in _RANK:
        raise ValueError(f"unknown role {required!r}; expected one of {ROLES}")
    return role in _RANK and _RANK[role] >= _RANK[required]


def create_token(session: Session, *, name: str, role: str, expires_in: timedelta,
                 secret: str | None = None,
                 now: datetime | None = None) -> tuple[ApiToken, str]:
    """Store a new token valid for `expires_in`; returns the row and the secret
    (the only time it is seen)."""
    if expires_in <= timedelta(0):
        raise ValueError(f"a token must be valid for some time, not {expires_in}")
    if role not in _RANK:
        raise ValueError(f"unknown role {role!r}; expected one of {ROLES}")
    if not name.strip():
        raise ValueError("a token needs a name (it is recorded as the author of labels)")
    secret = secret or new_secret()
    created = now or utcnow()
    row = ApiToken(name=name.strip(), token_hash=hash_token(secret), role=role,
                   created_at=created, expires_at=created + expires_in)
    session.add(row)
    session.flush()
    return row, secret


def verify_token(session: Session, secret: str,
                 now: datetime | None = None) -> Principal | None:
    """The principal for a presented secret, or None if unknown, revoked or expired."""
    if not secret:
        return None
    digest = hash_token(secret)
    # Expiry is compared in SQL: SQLite hands datetimes back without their zone.
    row = session.scalars(select(ApiToken).where(
        ApiToken.token_hash == digest, ApiToken.expires_at > (now or utcnow()))).one_or_none()
    # The lookup is by hash, so timing reveals nothing about the secret; the
    # constant-time compare is belt and braces against a future change of lookup.
    if row is None or row.revoked_at is not None or not hmac.compare_digest(row.token_hash,
                                                                            digest):
        return None
    return Principal(row.id, row.name, row.role)


def revoke_tokens(session: Session, *, name: str | None = None, token_id: int | None = None,
                  now: datetime | None = None) -> int:
    """Revoke active tokens by name or id; returns how many were revoked."""
    if (name is None) == (token_id is None):
        raise ValueError("give exactly one of name or token_id")
    stmt = select(ApiToken).where(ApiToken.revoked_at.is_(None))
    stmt = stmt.where(ApiToken.name == name) if name is not None else stmt.where(
        ApiToken.id == token_id)
    rows = list(session.scalars(stmt))
    for row in rows:
        row.revoked_at = now or utcnow()
    session.flush()
    return len(rows)


def token_state(row: ApiToken, now: datetime) -> str:
    """'active', 'revoked YYYY-MM-DD' or 'expired' for listings."""
    if row.revoked_at is not None:
        return f"revoked {row.revoked_at:%Y-%m-%d}"
    expires = row.expires_at
    # SQLite returns datetimes without their zone; they were stored in UTC.
    if expires.tzinfo is None:
        expires = expires.replace(tzinfo=now.tzinfo)
    return "expired" if expires <= now else "active"


def list_tokens(session: Session) -> list[ApiToken]:
    return list(session.scalars(select(ApiToken).order_by(ApiToken.id)))


def ensure_bootstrap_token(session: Session, secret: str, *, expires_in: timedelta) -> bool:
    """Store the configured bootstrap secret as an admin token once; True if new.

    It expires like any token: once it has, sign in with a token from
    `clad token create`, or configure a new bootstrap secret.
    """
    digest = hash_token(secret)
    if session.scalars(select(ApiToken.id).where(ApiToken.token_hash == digest)).first():
        return False
    create_token(session, name="bootstrap-admin", role="admin", secret=secret,
                 expires_in=expires_in)
    return True
