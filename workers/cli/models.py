"""`clad model`: register a saved model version, make it active, list versions."""

from __future__ import annotations

import typer
from rich.console import Console
from rich.table import Table
from sqlalchemy import select

from pipeline.storage.database import make_engine, make_session_factory, transaction
from pipeline.storage.models import ModelVersion
from pipeline.storage.repository import activate_model_version, register_model_version

model_app = typer.Typer(help="Model versions: register a saved version, activate it, list.",
                        no_args_is_help=True)


def _factory(ctx: typer.Context):  # noqa: ANN202 - sessionmaker
    from workers.cli.main import settings_from

    return make_session_factory(make_engine(settings_from(ctx).database.database_url))


@model_app.command("register")
def register_version(
    ctx: typer.Context,
    path: str = typer.Argument(..., help="A saved version directory (clad train's output)."),
    activate: bool = typer.Option(False, "--activate",
                                  help="Make it the active model of its product now."),
) -> None:
    """Record a saved model version (status candidate, or active with --activate)."""
    from engine.errors import ModelArtifactError
    from engine.scoring.artifacts import load_model

    try:
        model = load_model(path)
    except (ModelArtifactError, FileNotFoundError) as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None
    with transaction(_factory(ctx)) as session:
        exists = session.scalars(select(ModelVersion).where(
            ModelVersion.version == model.version)).one_or_none()
        if exists is None:
            register_model_version(session, version=model.version, product=model.category,
                                   path=str(path), threshold=model.threshold,
                                   metrics=model.metadata.get("metrics", {}))
        if activate:
            activate_model_version(session, model.version)
    state = "active" if activate else "candidate"
    typer.echo(f"{model.category} {model.version}: {state} (threshold {model.threshold:.4g})")


@model_app.command("list")
def list_versions(ctx: typer.Context,
                  product: str | None = typer.Option(None, help="Only this product.")) -> None:
    """Every registered version, newest first."""
    with _factory(ctx)() as session:
        stmt = select(ModelVersion).order_by(ModelVersion.created_at.desc())
        if product:
            stmt = stmt.where(ModelVersion.product == product)
        rows = session.scalars(stmt).all()
    table = Table(title="model versions")
    for column in ("product", "version", "status", "threshold", "created", "reason"):
        table.add_column(column)
    for row in rows:
        table.add_row(row.product, row.version, row.status,
                      f"{row.threshold:.4g}" if row.threshold is not None else "-",
                      row.created_at.strftime("%Y-%m-%d %H:%M"), row.reason or "")
    Console().print(table)


def register(app: typer.Typer) -> None:
    app.add_typer(model_app, name="model")
