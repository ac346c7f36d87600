"""Operator accounts: a name and a password (argon2id), a role, and console sessions.

People sign in to the console with these; machines and scripts keep API tokens
(pipeline/storage/tokens.py). A signed-in browser holds a random session secret in
its cookie and the database its sha256, like a token: a session can be revoked
(sign out), it expires, and it follows its account (a disabled account's sessions
stop working, a changed role applies at once).

Wrong passwords: after MAX_FAILED in a row the account refuses every password for
LOCKOUT, so a password cannot be guessed at line speed; the right password
afterwards resets the count.
"""

from __future__ import annotations

import secrets
from datetime import datetime, timedelta

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from sqlalchemy import select
from sqlalchemy.orm import Session

from pipeline.storage.models import ROLES, ConsoleSession, User, utcnow
from pipeline.storage.tokens import Principal, hash_token

SESSION_PREFIX = "clads_"
MIN_PASSWORD = 10
MAX_PASSWORD = 1000  # argon2 takes any length; this bounds the work a request can ask for
MAX_FAILED = 5
LOCKOUT = timedelta(minutes=5)
_HASHER = PasswordHasher()  # argon2id with the library's current recommended parameters
# Verified against when the name is unknown, so both answers take the same time.
_DUMMY_HASH = _HASHER.hash("not a password of anyone")


class AccountError(ValueError):
    """A bad name, password or role for an account."""


def _aware(when: datetime, like: datetime) -> datetime:
    # SQLite hands datetimes back without their zone; they were stored in UTC.
    return when.replace(tzinfo=like.tzinfo) if when.tzinfo is None else when


def check_password(password: str) -> None:
    if len(password) < MIN_PASSWORD:
        raise AccountError(f"a password needs at least {MIN_PASSWORD} characters")
    if len(password) > MAX_PASSWORD:
        raise AccountError(f"a password has at most {MAX_PASSWORD} characters")


def create_user(session: Session, *, username: str, password: str, role: str) -> User:
    name = username.strip()
    if not name or len(name) > 100 or any(c.isspace() or ord(c) < 0x20 for c in name):
        raise AccountError("a username is 1 to 100 characters without spaces")
    if role not in ROLES:
        raise AccountError(f"unknown role {role!r}; expected one of {ROLES}")
    check_password(password)
    if session.scalars(select(User.id).where(User.username == name)).first() is not None:
        raise AccountError(f"user {name!r} exists already")
    user = User(username=name, password_hash=_HASHER.hash(password), role=role,
                created_at=utcnow(), failed_logins=0)
    session.add(user)
    session.flush()
    return user


def find_user(session: Session, username: str) -> User | None:
    return session.scalars(select(User).where(User.username == username.strip())).one_or_none()


def set_password(session: Session, user: User, password: str) -> None:
    check_password(password)
    user.password_hash = _HASHER.hash(password)
    user.failed_logins, user.locked_until = 0, None
    revoke_sessions(session, user)


def set_disabled(session: Session, user: User, disabled: bool,
                 now: datetime | None = None) -> None:
    user.disabled_at = (now or utcnow()) if disabled else None
    if disabled:
        revoke_sessions(session, user)


def revoke_sessions(session: Session, user: User, now: datetime | None = None) -> None:
    for row in session.scalars(select(ConsoleSession).where(
            ConsoleSession.user_id == user.id, ConsoleSession.revoked_at.is_(None))):
        row.revoked_at = now or utcnow()
    session.flush()


def authenticate(session: Session, username: str, password: str,
                 now: datetime | None = None) -> User | None:
    """The account if the password is right and the account may sign in, else None.
    Unknown names, disabled and locked accounts cost the same hash as a real check."""
    now = now or utcnow()
    user = find_user(session, username) if len(password) <= MAX_PASSWORD else None
    try:
        _HASHER.verify(user.password_hash if user else _DUMMY_HASH, password[:MAX_PASSWORD])
        right = user is not None
    except (VerificationError, InvalidHashError):
        right = False
    if user is None or user.disabled_at is not None:
        return None
    if user.locked_until is not None and _aware(user.locked_until, now) > now:
        return None
    if not right:
        user.failed_logins += 1
        if user.failed_logins >= MAX_FAILED:
            user.failed_logins, user.locked_until = 0, now + LOCKOUT
        session.flush()
        return None
    if _HASHER.check_needs_rehash(user.password_hash):
        user.password_hash = _HASHER.hash(password)
    user.failed_logins, user.locked_until = 0, None
    session.flush()
    return user


def start_session(session: Session, user: User, *, lifetime: timedelta,
                  now: datetime | None = None) -> str:
    """A new console session for the account; returns its secret (the cookie's value)."""
    secret = SESSION_PREFIX + secrets.token_urlsafe(32)
    created = now or utcnow()
    session.add(ConsoleSession(user_id=user.id, secret_hash=hash_token(secret),
                               created_at=created, expires_at=created + lifetime))
    session.flush()
    return secret


def end_session(session: Session, secret: str, now: datetime | None = None) -> None:
    row = session.scalars(select(ConsoleSession).where(
        ConsoleSession.secret_hash == hash_token(secret))).one_or_none()
    if row is not None and row.revoked_at is None:
        row.revoked_at = now or utcnow()
        session.flush()


def verify_session(session: Session, secret: str,
                   now: datetime | None = None) -> Principal | None:
    """Who a console session secret belongs to, or None (unknown, ended, expired, or
    its account disabled)."""
    if not secret.startswith(SESSION_PREFIX):
        return None
    row = session.execute(
        select(ConsoleSession, User).join(User, User.id == ConsoleSession.user_id)
        .where(ConsoleSession.secret_hash == hash_token(secret),
               ConsoleSession.expires_at > (now or utcnow()))).one_or_none()
    if row is None:
        return None
    sess, user = row
    if sess.revoked_at is not None or user.disabled_at is not None:
        return None
    return Principal(None, user.username, user.role)


def list_users(session: Session) -> list[User]:
    return list(session.scalars(select(User).order_by(User.id)))
