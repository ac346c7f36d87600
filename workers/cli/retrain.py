"""`clad retrain`: one run now, or on a cron schedule; never two at once."""

from __future__ import annotations

import json
import logging
import time
from dataclasses import asdict
from datetime import datetime
from typing import TYPE_CHECKING, Annotated

import typer
from rich.console import Console
from rich.table import Table
from sqlalchemy import distinct, select

from pipeline.storage.database import make_engine, make_session_factory, wait_for_database
from pipeline.storage.models import ModelVersion
from workers.retraining.cron import CronError, CronSchedule
from workers.retraining.lock import RetrainLockedError, retrain_lock

if TYPE_CHECKING:  # the job itself imports torch: loaded only when a retrain runs
    from workers.retraining.job import RetrainResult

log = logging.getLogger(__name__)


def _print(results: list[RetrainResult], as_json: bool) -> None:
    if as_json:
        typer.echo(json.dumps([asdict(r) for r in results], indent=2, default=str))
        return
    table = Table(title="retraining")
    for column in ("product", "status", "champion", "challenger", "held-out image AUROC",
                   "reason"):
        table.add_column(column)
    for r in results:
        old, new = r.champion_metrics.get("image_auroc"), r.challenger_metrics.get("image_auroc")
        figures = f"{old:.3f} -> {new:.3f}" if old is not None and new is not None else "-"
        table.add_row(r.product, r.status, r.champion_version or "-",
                      r.challenger_version or "-", figures, r.reason)
    Console().print(table)
    typer.echo(json.dumps({r.product: r.counts for r in results}))
    from workers.retraining.describer_step import describer_line

    for r in results:
        typer.echo(describer_line(r.product, r.describer))


def register(app: typer.Typer) -> None:
    @app.command("retrain")
    def retrain(
        ctx: typer.Context,
        product: Annotated[list[str] | None, typer.Option(
            "--product", "-p", help="Product(s); default: every product with an active model."
        )] = None,
        dry_run: bool = typer.Option(False, "--dry-run",
                                     help="Report what would be trained on; change nothing."),
        schedule: str | None = typer.Option(None, "--schedule",
                                            help='Cron expression, e.g. "0 3 * * *" (local time); '
                                                 "runs forever."),
        epochs: int = typer.Option(15, min=1, help="Training epochs of the text heads."),
        tolerance: float = typer.Option(0.02, min=0.0, max=1.0,
                                        help="Largest allowed drop of any held-out metric."),
        wait_lock: float = typer.Option(0.0, min=0.0,
                                        help="Seconds to wait for a run already going."),
        as_json: bool = typer.Option(False, "--json", help="Print results as JSON."),
    ) -> None:
        """Fine-tune from operator labels; promote the challenger only if it is better."""
        from workers.cli.main import settings_from

        settings = settings_from(ctx)
        try:
            cron = CronSchedule.parse(schedule) if schedule else None
        except CronError as exc:
            raise typer.BadParameter(str(exc), param_hint="--schedule") from None
        engine = make_engine(settings.database.database_url)
        wait_for_database(engine, timeout_s=60)
        factory = make_session_factory(engine)
        from workers.retraining.job import RetrainOptions, retrain_product

        options = RetrainOptions(epochs=epochs, tolerance=tolerance, dry_run=dry_run)

        def run_once() -> list[RetrainResult]:
            with retrain_lock(engine, wait_s=wait_lock,
                              lock_dir=settings.model.model_dir if not
                              settings.database.database_url.startswith("postgresql") else None):
                with factory() as session:
                    products = product or list(session.scalars(
                        select(distinct(ModelVersion.product)).where(
                            ModelVersion.status == "active")))
                return [retrain_product(factory, p, model_dir=settings.model.model_dir,
                                        frame_dir=settings.api.frame_dir, options=options)
                        for p in products]

        if cron is None:
            try:
                _print(run_once(), as_json)
            except RetrainLockedError as exc:
                typer.echo(f"error: {exc}; try again later or pass --wait-lock", err=True)
                raise typer.Exit(3) from None
            return
        while True:
            now = datetime.now().astimezone()
            due = cron.next_after(now)
            log.info("next retraining run at %s", due.isoformat())
            time.sleep(max(0.0, (due - now).total_seconds()))
            try:
                _print(run_once(), as_json)
            except RetrainLockedError as exc:
                log.warning("skipped this run: %s", exc)
            except Exception:  # noqa: BLE001 - a failed night must not end the schedule
                log.exception("retraining run failed; waiting for the next one")
