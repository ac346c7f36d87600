"""Operator accounts: `clad user create`, signing in with a name and password, roles as
tokens have them, wrong passwords locking the account a while, signing out and disabling
ending the session at once. Tokens keep working for scripts."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import Engine, select
from typer.testing import CliRunner

from pipeline.settings import AlarmSettings, Settings
from pipeline.storage.database import make_session_factory, transaction
from pipeline.storage.models import User
from pipeline.storage.users import LOCKOUT, MAX_FAILED, find_user, set_disabled
from tests.integration.operator_data import T0, Seeded
from workers.api import create_app

pytestmark = pytest.mark.integration
PASSWORD = "correct horse battery"


class Clock:
    def __init__(self) -> None:
        self.now = T0 + timedelta(hours=4)

    def __call__(self) -> datetime:
        return self.now


@pytest.fixture(scope="module")
def clock() -> Clock:
    return Clock()


@pytest.fixture(scope="module")
def client(pg_engine: Engine, seeded: Seeded, clock: Clock) -> Iterator[TestClient]:
    app = create_app(Settings(alarms=AlarmSettings(alarm_interval_s=0)), pg_engine, clock=clock)
    with TestClient(app) as c:
        yield c


def _cli(args: list[str], pg_url: str, stdin: str = "") -> object:
    from workers.cli.main import _register_subcommands, app

    _register_subcommands()
    return CliRunner().invoke(app, args, input=stdin, env={"CLAD_DATABASE_URL": pg_url})


def _sign_in(client: TestClient, username: str, password: str) -> object:
    client.cookies.clear()
    return client.post("/console/session", json={"username": username, "password": password})


def test_cli_creates_an_account_that_signs_in_with_its_role(
        client: TestClient, postgres_url: str, pg_engine: Engine) -> None:
    made = _cli(["user", "create", "alice", "--role", "operator", "--password-stdin"],
                postgres_url, f"{PASSWORD}\n")
    assert made.exit_code == 0, made.output
    assert "user alice (operator) created" in made.output
    again = _cli(["user", "create", "alice", "--password-stdin"], postgres_url, f"{PASSWORD}\n")
    assert again.exit_code == 1 and "exists already" in again.output
    short = _cli(["user", "create", "bob", "--password-stdin"], postgres_url, "short\n")
    assert short.exit_code == 1 and "at least 10 characters" in short.output
    with make_session_factory(pg_engine)() as session:
        stored = session.scalars(select(User.password_hash).where(User.username == "alice")).one()
    assert stored.startswith("$argon2id$") and PASSWORD not in stored

    r = _sign_in(client, "alice", PASSWORD)
    assert r.status_code == 200 and r.json() == {"name": "alice", "role": "operator"}
    assert client.get("/api/v1/me").json() == {"name": "alice", "role": "operator"}
    assert client.get("/history").status_code == 200
    # Operator, not admin; the label's author is the account's name.
    headers = {"X-Clad-Console": "1"}
    assert client.post("/api/v1/models/bottle-v2/promote", headers=headers).status_code == 403
    listed = _cli(["user", "list"], postgres_url)
    assert "\talice\toperator\tactive" in listed.output
    client.cookies.clear()


def test_wrong_passwords_lock_the_account_for_a_while(client: TestClient, clock: Clock,
                                                      pg_engine: Engine) -> None:
    with transaction(make_session_factory(pg_engine)) as session:
        from pipeline.storage.users import create_user

        create_user(session, username="carol", password=PASSWORD, role="viewer")
    assert _sign_in(client, "nobody", PASSWORD).status_code == 401
    for _ in range(MAX_FAILED):
        r = _sign_in(client, "carol", "wrong password!")
        assert r.status_code == 401 and "wrong password" in r.json()["error"]["message"]
    assert _sign_in(client, "carol", PASSWORD).status_code == 401  # locked
    clock.now += LOCKOUT + timedelta(seconds=1)
    assert _sign_in(client, "carol", PASSWORD).status_code == 200
    client.cookies.clear()


def test_signing_out_and_disabling_end_the_session(client: TestClient, pg_engine: Engine,
                                                   postgres_url: str) -> None:
    with transaction(make_session_factory(pg_engine)) as session:
        from pipeline.storage.users import create_user

        create_user(session, username="dave", password=PASSWORD, role="viewer")
    assert _sign_in(client, "dave", PASSWORD).status_code == 200
    cookie = client.cookies.get("clad_token")
    assert cookie.startswith("clads_")
    assert client.post("/console/logout").status_code == 200
    client.cookies.set("clad_token", cookie)  # a copy of the cookie kept after signing out
    assert client.get("/api/v1/me").status_code == 401
    assert _sign_in(client, "dave", PASSWORD).status_code == 200
    disabled = _cli(["user", "disable", "dave"], postgres_url)
    assert disabled.exit_code == 0, disabled.output
    assert client.get("/api/v1/me").status_code == 401
    assert _sign_in(client, "dave", PASSWORD).status_code == 401
    with transaction(make_session_factory(pg_engine)) as session:
        set_disabled(session, find_user(session, "dave"), False, now=datetime.now(UTC))
    assert _sign_in(client, "dave", PASSWORD).status_code == 200
    client.cookies.clear()


def test_tokens_still_sign_in_and_serve_scripts(client: TestClient, seeded: Seeded) -> None:
    client.cookies.clear()
    r = client.post("/console/session", json={"token": seeded.tokens["viewer"]})
    assert r.status_code == 200 and r.json()["role"] == "viewer"
    client.cookies.clear()
    bearer = {"Authorization": f"Bearer {seeded.tokens['operator']}"}
    assert client.get("/api/v1/me", headers=bearer).json()["name"] == "operator-tester"
    assert client.post("/console/session", json={"username": "x"}).status_code == 422


def test_a_nul_byte_in_a_name_is_refused_not_a_server_error(client: TestClient) -> None:
    from tests.integration.api_support import assert_error_format

    client.cookies.clear()
    r = client.post("/console/session", json={"username": "a\x00b", "password": "x" * 12})
    assert_error_format(r, 422)
    # In a password it is only a wrong password (it is never stored or sent to SQL).
    r = client.post("/console/session", json={"username": "alice", "password": "a\x00" * 6})
    assert r.status_code == 401
