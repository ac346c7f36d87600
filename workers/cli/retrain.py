"""`clad retrain`: one run now, or on a cron schedule; never two at once.

Exit codes (also the "status" of --json): 0 done (every product promoted, rejected,
skipped with its reason, or a dry run), 1 failed (a product's run raised; the others
still ran), 3 another run holds the lock, 130 / 143 stopped by SIGINT / SIGTERM (one log
line says where; the next run resumes from the last epoch's checkpoint). The schedule
daemon exits the same way when stopped.
"""

from __future__ import annotations

import json
import logging
import signal
import time
from collections.abc import Iterator
from contextlib import contextmanager
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
from workers.retraining.progress import Progress, RetrainInterrupted

if TYPE_CHECKING:  # the job itself imports torch: loaded only when a retrain runs
    from workers.retraining.job import RetrainResult

log = logging.getLogger(__name__)

EXIT_DONE, EXIT_FAILED, EXIT_LOCKED = 0, 1, 3
_SIGNALS = {signal.SIGTERM: ("SIGTERM", 143), signal.SIGINT: ("SIGINT", 130)}


@contextmanager
def interruptible() -> Iterator[None]:
    """SIGTERM / SIGINT raise RetrainInterrupted in the main thread for the block: the run
    stops where it is (training keeps its last epoch's checkpoint), the lock is released."""
    def handler(signum: int, _frame: object) -> None:
        name, code = _SIGNALS[signal.Signals(signum)]
        raise RetrainInterrupted(name, code)

    previous = {s: signal.signal(s, handler) for s in _SIGNALS}
    try:
        yield
    finally:
        for s, h in previous.items():
            signal.signal(s, h)


def overall_status(results: list[RetrainResult]) -> tuple[str, int]:
    if any(r.status == "failed" for r in results):
        return "failed", EXIT_FAILED
    if results and all(r.status == "skipped" for r in results):
        return "skipped", EXIT_DONE
    return "done", EXIT_DONE


def _print_json(status: str, code: int, results: list[RetrainResult], **extra: object) -> None:
    typer.echo(json.dumps({"status": status, "exit_code": code, **extra,
                           "results": [asdict(r) for r in results]}, indent=2, default=str))


def _print(results: list[RetrainResult], as_json: bool) -> int:
    """Print the run's results; returns its exit code."""
    status, code = overall_status(results)
    if as_json:
        _print_json(status, code, results)
        return code
    table = Table(title="retraining")
    for column in ("status", "product", "champion", "challenger", "held-out image AUROC",
                   "label conflicts", "reason"):
        table.add_column(column, overflow="fold")
    for r in results:
        old, new = r.champion_metrics.get("image_auroc"), r.challenger_metrics.get("image_auroc")
        figures = f"{old:.3f} -> {new:.3f}" if old is not None and new is not None else "-"
        conflicts = r.counts.get("label_conflicts", 0)
        if r.counts.get("excluded_conflicts"):
            conflicts = f"{conflicts} (excluded)"
        table.add_row(r.status, r.product, r.champion_version or "-",
                      r.challenger_version or "-", figures, str(conflicts), r.reason)
    Console().print(table)
    typer.echo(json.dumps({r.product: r.counts for r in results}))
    from workers.retraining.describer_step import describer_line

    for r in results:
        typer.echo(describer_line(r.product, r.describer))
    typer.echo(f"status: {status}")
    return code


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
        force: bool = typer.Option(False, "--force",
                                   help="Retrain even when labelled data and config are "
                                        "unchanged since the last run."),
        exclude_conflicts: bool = typer.Option(
            False, "--exclude-conflicts",
            help="Leave out frames whose label overturns another author's label."),
        as_json: bool = typer.Option(False, "--json", help="Print results (and the status) "
                                                           "as JSON."),
    ) -> None:
        """Fine-tune from operator labels; promote the challenger only if it is better."""
        from workers.cli.main import settings_from

        settings = settings_from(ctx)
        try:
            cron = CronSchedule.parse(schedule) if schedule else None
        except CronError as exc:
            raise typer.BadParameter(str(exc), param_hint="--schedule") from None
        tracker = Progress()
        waiting_for: list[str] = []  # the schedule's next run, while the daemon sleeps
        with interruptible():
            try:
                from workers.retraining.job import RetrainOptions

                rs = settings.retrain
                options = RetrainOptions(epochs=epochs, tolerance=tolerance, dry_run=dry_run,
                                         force=force, exclude_conflicts=exclude_conflicts,
                                         bank_window_days=rs.retrain_bank_window_days,
                                         bank_half_life_days=rs.retrain_bank_half_life_days,
                                         group_seconds=rs.retrain_group_seconds)
                code = _run(settings, cron, product, options, tracker, waiting_for,
                            wait_lock=wait_lock, as_json=as_json)
            except RetrainInterrupted as exc:
                if waiting_for:
                    where = f"while waiting for the run at {waiting_for[0]} (no run was going)"
                    tracker.checkpoint = None
                else:
                    where = f"in {tracker.where()}"
                log.warning("retrain stopped by %s %s; %s", exc.signal_name, where,
                            "the next run resumes from the last checkpoint"
                            if tracker.checkpoint else "nothing to resume, the next run "
                            "starts afresh")
                if as_json:
                    _print_json("interrupted", exc.exit_code, [], signal=exc.signal_name,
                                where=where)
                raise typer.Exit(exc.exit_code) from None
        raise typer.Exit(code)


def _run(settings, cron: CronSchedule | None, products: list[str] | None,  # noqa: ANN001
         options, tracker: Progress, waiting_for: list[str], *, wait_lock: float,  # noqa: ANN001
         as_json: bool) -> int:
    """One run, or the schedule until stopped; returns the exit code (see the module doc)."""
    from workers.retraining.job import RetrainResult, retrain_product
    from workers.streaming.scoring import context_config

    engine = make_engine(settings.database.database_url)
    wait_for_database(engine, timeout_s=60)
    factory = make_session_factory(engine)
    model_dir = settings.model.model_dir

    def run_once() -> list[RetrainResult]:
        with retrain_lock(engine, wait_s=wait_lock,
                          lock_dir=model_dir if not
                          settings.database.database_url.startswith("postgresql") else None):
            with factory() as session:
                names = products or list(session.scalars(
                    select(distinct(ModelVersion.product)).where(
                        ModelVersion.status == "active")))
            results = []
            for name in names:
                tracker.reset(name)
                try:
                    results.append(retrain_product(
                        factory, name, model_dir=model_dir, frame_dir=settings.api.frame_dir,
                        options=options, tracker=tracker,
                        context=context_config(settings.context)))
                except Exception as exc:  # noqa: BLE001 - one product must not stop others
                    log.exception("product %s: retraining failed in step '%s'", name,
                                  tracker.step)
                    results.append(RetrainResult(name, "failed", f"{type(exc).__name__}: {exc}"))
            if not options.dry_run:
                _apply_retention(factory, model_dir, settings.retrain)
            return results

    if cron is None:
        try:
            return _print(run_once(), as_json)
        except RetrainLockedError as exc:
            typer.echo(f"error: {exc}; try again later or pass --wait-lock", err=True)
            if as_json:
                _print_json("locked", EXIT_LOCKED, [], reason=str(exc))
            return EXIT_LOCKED
    while True:
        now = datetime.now().astimezone()
        due = cron.next_after(now)
        waiting_for[:] = [due.isoformat()]  # before the log line a supervisor may act on
        log.info("next retraining run at %s", due.isoformat())
        time.sleep(max(0.0, (due - now).total_seconds()))
        waiting_for.clear()
        try:
            _print(run_once(), as_json)
        except RetrainLockedError as exc:
            log.warning("skipped this run: %s", exc)
        except Exception:  # noqa: BLE001 - a failed night must not end the schedule
            log.exception("retraining run failed; waiting for the next one")


def _apply_retention(factory, model_dir, rs) -> None:  # noqa: ANN001
    """The retention rules after a run (workers.retraining.retention); a failure is logged,
    never the run's outcome."""
    from workers.retraining.retention import prune

    try:
        prune(factory, model_dir, keep_rejected=rs.retrain_keep_rejected,
              work_max_age_s=rs.retrain_work_max_age_days * 86_400)
    except Exception:  # noqa: BLE001 - disk housekeeping never fails a retrain
        log.exception("retention after the run failed; run `clad model prune` by hand")
