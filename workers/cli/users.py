"""`clad user`: operator accounts for the console (name + password, a role)."""

from __future__ import annotations

import sys
from typing import Annotated

import typer

from workers.cli.main import settings_from
from workers.cli.operators import Role

user_app = typer.Typer(help="Operator accounts for the console: create, list, set a password, "
                            "disable. (Machines and scripts use `clad token`.)",
                       no_args_is_help=True)

STDIN_HELP = "Read the password from the first line of standard input (scripts)."


def _sessions(ctx: typer.Context):  # noqa: ANN202 - a sessionmaker
    from pipeline.storage.database import engine_from_settings, make_session_factory

    return make_session_factory(engine_from_settings(settings_from(ctx).database))


def _password(from_stdin: bool) -> str:
    if from_stdin:
        return sys.stdin.readline().rstrip("\r\n")
    return typer.prompt("Password", hide_input=True, confirmation_prompt=True)


def _fail(message: str) -> typer.Exit:
    typer.echo(f"error: {message}", err=True)
    return typer.Exit(1)


@user_app.command("create")
def user_create(ctx: typer.Context,
                username: Annotated[str, typer.Argument(help="The name to sign in with.")],
                role: Annotated[Role, typer.Option()] = Role.operator,
                password_stdin: Annotated[bool, typer.Option(help=STDIN_HELP)] = False) -> None:
    """Create an account; asks for its password twice (at least 10 characters)."""
    from pipeline.storage.database import transaction
    from pipeline.storage.users import AccountError, create_user

    password = _password(password_stdin)
    try:
        with transaction(_sessions(ctx)) as session:
            user = create_user(session, username=username, password=password, role=role.value)
            typer.echo(f"user {user.username} ({user.role}) created; sign in to the console "
                       f"(clad api) with this name and password")
    except AccountError as exc:
        raise _fail(str(exc)) from None


@user_app.command("password")
def user_password(ctx: typer.Context, username: str,
                  password_stdin: Annotated[bool, typer.Option(help=STDIN_HELP)] = False
                  ) -> None:
    """Set a new password (ends the account's console sessions)."""
    from pipeline.storage.database import transaction
    from pipeline.storage.users import AccountError, find_user, set_password

    password = _password(password_stdin)
    try:
        with transaction(_sessions(ctx)) as session:
            user = find_user(session, username)
            if user is None:
                raise AccountError(f"no user {username!r}")
            set_password(session, user, password)
    except AccountError as exc:
        raise _fail(str(exc)) from None
    typer.echo(f"password of {username} changed")


def _set_disabled(ctx: typer.Context, username: str, disabled: bool) -> None:
    from pipeline.storage.database import transaction
    from pipeline.storage.users import find_user, set_disabled

    with transaction(_sessions(ctx)) as session:
        user = find_user(session, username)
        if user is None:
            raise _fail(f"no user {username!r}")
        set_disabled(session, user, disabled)
    typer.echo(f"{username} {'disabled' if disabled else 'enabled'}")


@user_app.command("disable")
def user_disable(ctx: typer.Context, username: str) -> None:
    """Stop an account from signing in (its open sessions end at once)."""
    _set_disabled(ctx, username, True)


@user_app.command("enable")
def user_enable(ctx: typer.Context, username: str) -> None:
    _set_disabled(ctx, username, False)


@user_app.command("list")
def user_list(ctx: typer.Context) -> None:
    """Accounts by id, name, role and state (never the password hashes)."""
    from pipeline.storage.users import list_users

    with _sessions(ctx)() as session:
        for u in list_users(session):
            state = f"disabled {u.disabled_at:%Y-%m-%d}" if u.disabled_at else "active"
            typer.echo(f"{u.id}\t{u.username}\t{u.role}\t{state}")


def register(app: typer.Typer) -> None:
    app.add_typer(user_app, name="user")
