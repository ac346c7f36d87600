"""`clad model`: register a saved model version, make it active, list versions, prune."""

from __future__ import annotations

import typer
from rich.console import Console
from rich.table import Table
from sqlalchemy import select

from pipeline.storage.database import make_engine, make_session_factory, transaction
from pipeline.storage.models import ModelVersion
from pipeline.storage.repository import activate_model_version, register_model_version

model_app = typer.Typer(help="Model versions: register a saved version, activate it, list, "
                             "prune.",
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
    # Status first and whole version ids (never cut): on a narrow terminal the other
    # columns wrap instead, so an active and a rejected row can never look alike.
    statuses = [row.status + (" (pruned)" if (row.metrics or {}).get("pruned_at") else "")
                for row in rows]
    table.add_column("status", no_wrap=True, min_width=max(map(len, statuses), default=6))
    table.add_column("version", no_wrap=True,
                     min_width=max((len(row.version) for row in rows), default=7))
    table.add_column("product", overflow="fold")
    table.add_column("threshold", overflow="fold")
    table.add_column("created", overflow="fold")
    table.add_column("reason", overflow="fold")
    for row, status in zip(rows, statuses, strict=True):
        table.add_row(status, row.version, row.product,
                      f"{row.threshold:.4g}" if row.threshold is not None else "-",
                      row.created_at.strftime("%Y-%m-%d %H:%M"), row.reason or "")
    Console().print(table)


@model_app.command("prune")
def prune_versions(
    ctx: typer.Context,
    product: str | None = typer.Option(None, help="Only this product."),
    keep_rejected: int | None = typer.Option(
        None, min=0,
        help="Rejected versions kept per product (default CLAD_RETRAIN_KEEP_REJECTED)."),
    work_max_age_days: float | None = typer.Option(
        None, min=0.0, help="Remove models/.work entries untouched this long "
                            "(default CLAD_RETRAIN_WORK_MAX_AGE_DAYS; 0: all of them)."),
    dry_run: bool = typer.Option(False, "--dry-run", help="Say what would go; remove nothing."),
) -> None:
    """Remove rejected versions and work leftovers; never the active or previous active one."""
    from workers.cli.main import settings_from
    from workers.retraining.lock import RetrainLockedError, retrain_lock
    from workers.retraining.retention import prune

    settings = settings_from(ctx)
    engine = make_engine(settings.database.database_url)
    rs = settings.retrain
    model_dir = settings.model.model_dir
    try:
        # a running retrain's checkpoint and staged version are not leftovers
        with retrain_lock(engine, lock_dir=None if engine.dialect.name == "postgresql"
                          else model_dir):
            report = prune(make_session_factory(engine), model_dir,
                           keep_rejected=rs.retrain_keep_rejected if keep_rejected is None
                           else keep_rejected,
                           work_max_age_s=86_400 * (rs.retrain_work_max_age_days
                                                    if work_max_age_days is None
                                                    else work_max_age_days),
                           product=product, dry_run=dry_run)
    except RetrainLockedError as exc:
        typer.echo(f"error: {exc}; prune after the run", err=True)
        raise typer.Exit(3) from None
    verb = "would remove" if dry_run else "removed"
    for version in report.removed_versions:
        typer.echo(f"{verb} version {version}")
    for entry in report.removed_work:
        typer.echo(f"{verb} {entry}")
    for version, why in sorted(report.kept.items()):
        typer.echo(f"kept {version} ({why})")
    typer.echo(f"{verb} {len(report.removed_versions)} versions and {len(report.removed_work)} "
               f"work entries, {report.freed_bytes / 1e6:.1f} MB")


def register(app: typer.Typer) -> None:
    app.add_typer(model_app, name="model")
