"""Tokens: hashed at rest, roles ordered, revocation final (SQLite, no services)."""

from __future__ import annotations

from collections.abc import Iterator

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
    verify_token,
)

pytestmark = pytest.mark.unit


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
    row, secret = create_token(session, name="alice", role="operator")
    assert secret.startswith(TOKEN_PREFIX) and len(secret) > 40
    stored = session.scalars(select(ApiToken.token_hash)).all()
    assert stored == [hash_token(secret)] and secret not in stored
    principal = verify_token(session, secret)
    assert principal is not None and (principal.name, principal.role) == ("alice", "operator")


def test_unknown_empty_and_revoked_tokens_are_rejected(session: Session) -> None:
    _, secret = create_token(session, name="bob", role="viewer")
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
        create_token(session, name="x", role="root")
    with pytest.raises(ValueError, match="name"):
        create_token(session, name="  ", role="viewer")
    with pytest.raises(ValueError):
        revoke_tokens(session)


def test_bootstrap_token_is_stored_once_as_admin(session: Session) -> None:
    secret = "a-long-random-bootstrap-secret"
    assert ensure_bootstrap_token(session, secret) is True
    assert ensure_bootstrap_token(session, secret) is False
    principal = verify_token(session, secret)
    assert principal is not None and principal.role == "admin"
