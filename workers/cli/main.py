"""The `clad` command line. Settings are read once here and passed down."""

from __future__ import annotations

import logging
import signal
import sys

import typer

from pipeline.settings import Settings, SettingsError, load_settings

app = typer.Typer(
    name="clad",
    help="clad-line: streaming visual inspection with the CLAD anomaly model.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
db_app = typer.Typer(help="Database schema: upgrade to the latest revision, show the current one.",
                     no_args_is_help=True)
app.add_typer(db_app, name="db")


def settings_from(ctx: typer.Context) -> Settings:
    """The settings built by the top-level callback for this invocation."""
    return ctx.find_root().obj


@app.callback()
def _root(ctx: typer.Context,
          verbose: bool = typer.Option(False, "--verbose", "-v", help="Debug logging.")) -> None:
    logging.basicConfig(level=logging.DEBUG if verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        ctx.obj = load_settings()
    except SettingsError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None


@db_app.command("upgrade")
def db_upgrade(ctx: typer.Context,
               revision: str = typer.Argument("head", help="Target revision.")) -> None:
    """Apply migrations up to REVISION (default: the latest)."""
    from pipeline.storage.database import make_engine, wait_for_database
    from pipeline.storage.migrate import current_revision, upgrade

    settings = settings_from(ctx).database
    engine = make_engine(settings.database_url, connect_timeout_s=settings.db_connect_timeout_s)
    wait_for_database(engine, timeout_s=30)
    before = current_revision(engine)
    upgrade(engine, revision)
    after = current_revision(engine)
    message = "already at" if before == after else f"upgraded {before or 'empty'} ->"
    typer.echo(f"database {engine.url.render_as_string(hide_password=True)}: {message} {after}")


@db_app.command("current")
def db_current(ctx: typer.Context) -> None:
    """Print the schema revision of the configured database and the latest one."""
    from pipeline.storage.database import make_engine
    from pipeline.storage.migrate import current_revision, head_revision

    engine = make_engine(settings_from(ctx).database.database_url)
    typer.echo(f"current: {current_revision(engine)}  latest: {head_revision(engine)}")


def _register_subcommands() -> None:
    # Each area adds its own commands; a module not written yet is simply absent.
    import importlib

    for name in ("workers.cli.evaluate", "workers.cli.train", "workers.cli.pipeline",
                 "workers.cli.export", "workers.cli.describe", "workers.cli.operators",
                 "workers.cli.retrain", "workers.cli.models", "workers.cli.users"):
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name != name:
                raise
            continue
        module.register(app)


def main() -> None:
    # Until a command installs its own handlers, a SIGTERM (e.g. a pod stopped while
    # starting) is a clean exit rather than death by signal.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    _register_subcommands()
    try:
        app()
    except SettingsError as exc:  # settings re-read inside a command
        typer.echo(f"error: {exc}", err=True)
        sys.exit(2)


if __name__ == "__main__":
    main()
