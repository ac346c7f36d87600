"""Tokens: hashed at rest, roles ordered, revocation final, expiry enforced (SQLite)."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session

from pipeline.storage.database import make_engine
from pipeline.storage.migrate import upgrade
from pipeline.storage.models import ApiToken
from pipeline.storage.tokens import (
    TOKEN_PREFIX,
    create_token,
    ensure_bootstrap_token,
    hash_token,
    revoke_tokens,
    role_allows,
    token_state,
    verify_token,
)

pytestmark = pytest.mark.unit
DAY = timedelta(days=1)


@pytest.fixture(scope="module")
def engine(tmp_path_factory: pytest.TempPathFactory):  # noqa: ANN201 - Engine
    engine = make_engine(f"sqlite:///{tmp_path_factory.mktemp('tokens') / 'clad.db'}")
    upgrade(engine)
    yield engine
    engine.dispose()


@pytest.fixture
def session(engine) -> Iterator[Session]:  # noqa: ANN001
    with engine.connect() as connection:
        outer = connection.begin()
        s = Session(bind=connection, join_transaction_mode="create_savepoint")
        yield s
        s.close()
        outer.rollback()


def test_secret_is_shown_once_and_only_its_hash_is_stored(session: Session) -> None:
    row, secret = create_token(session, name="alice", role="operator", expires_in=DAY)
    assert secret.startswith(TOKEN_PREFIX) and len(secret) > 40
    stored = session.scalars(select(ApiToken.token_hash)).all()
    assert stored == [hash_token(secret)] and secret not in stored
    principal = verify_token(session, secret)
    assert principal is not None and (principal.name, principal.role) == ("alice", "operator")


def test_unknown_empty_and_revoked_tokens_are_rejected(session: Session) -> None:
    _, secret = create_token(session, name="bob", role="viewer", expires_in=DAY)
    assert verify_token(session, "") is None
    assert verify_token(session, secret + "x") is None
    assert revoke_tokens(session, name="bob") == 1
    assert verify_token(session, secret) is None
    assert revoke_tokens(session, name="bob") == 0


def test_roles_are_ordered() -> None:
    assert role_allows("admin", "operator") and role_allows("operator", "viewer")
    assert not role_allows("viewer", "operator") and not role_allows("operator", "admin")
    assert not role_allows("root", "viewer")
    with pytest.raises(ValueError):
        role_allows("viewer", "superuser")


def test_bad_role_or_name_is_refused(session: Session) -> None:
    with pytest.raises(ValueError, match="role"):
        create_token(session, name="x", role="root", expires_in=DAY)
    with pytest.raises(ValueError, match="name"):
        create_token(session, name="  ", role="viewer", expires_in=DAY)
    with pytest.raises(ValueError):
        revoke_tokens(session)


def test_bootstrap_token_is_stored_once_as_admin(session: Session) -> None:
    secret = "a-long-random-bootstrap-secret"
    assert ensure_bootstrap_token(session, secret, expires_in=DAY) is True
    assert ensure_bootstrap_token(session, secret, expires_in=DAY) is False
    principal = verify_token(session, secret)
    assert principal is not None and principal.role == "admin"


def test_token_expires_after_its_lifetime(session: Session) -> None:
    issued = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)
    row, secret = create_token(session, name="carol", role="viewer", expires_in=30 * DAY,
                               now=issued)
    assert row.expires_at == issued + 30 * DAY
    just_before = issued + 30 * DAY - timedelta(seconds=1)
    assert verify_token(session, secret, now=just_before) is not None
    assert verify_token(session, secret, now=issued + 30 * DAY) is None
    assert verify_token(session, secret, now=issued + 31 * DAY) is None
    session.expire_all()  # read expires_at back as the database returns it
    assert token_state(row, just_before) == "active"
    assert token_state(row, issued + 30 * DAY) == "expired"


def test_token_lifetime_must_be_positive(session: Session) -> None:
    with pytest.raises(ValueError, match="valid for some time"):
        create_token(session, name="dave", role="viewer", expires_in=timedelta(0))

