"""Operator commands: `clad history`, `clad api`, `clad token`, `clad frames purge`."""

from __future__ import annotations

import json
import sys
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Annotated

import typer

from workers.cli.main import settings_from


class Output(StrEnum):
    table = "table"
    csv = "csv"
    json = "json"


class Label(StrEnum):
    normal = "normal"
    anomalous = "anomalous"


class OperatorSaid(StrEnum):
    none = "none"
    any = "any"
    normal = "normal"
    anomalous = "anomalous"
    described = "described"
    overruled = "overruled"


class Role(StrEnum):
    viewer = "viewer"
    operator = "operator"
    admin = "admin"


token_app = typer.Typer(help="API tokens: create (shown once), revoke, list.",
                        no_args_is_help=True)
frames_app = typer.Typer(help="Stored frame bytes: apply the retention setting.",
                         no_args_is_help=True)


def _engine(ctx: typer.Context):  # noqa: ANN202 - sqlalchemy Engine
    from pipeline.storage.database import engine_from_settings

    return engine_from_settings(settings_from(ctx).database)


def history(
    ctx: typer.Context,
    line: Annotated[str | None, typer.Option(help="Production line id.")] = None,
    camera: Annotated[str | None, typer.Option(help="Camera id.")] = None,
    product: Annotated[str | None, typer.Option()] = None,
    since: Annotated[datetime | None,
                     typer.Option(help="Captured at or after (UTC unless offset).")] = None,
    until: Annotated[datetime | None, typer.Option(help="Captured before.")] = None,
    last: Annotated[float | None,
                    typer.Option(help="Only the last N hours (instead of --since).")] = None,
    verdict: Annotated[Label | None, typer.Option()] = None,
    defect: Annotated[str | None, typer.Option(help="Exact defect kind.")] = None,
    min_score: Annotated[float | None, typer.Option(help="Raw score at least.")] = None,
    max_score: Annotated[float | None, typer.Option()] = None,
    min_relative: Annotated[float | None, typer.Option(
        help="score / threshold at least (1.0 = the threshold, on every product).")] = None,
    max_relative: Annotated[float | None, typer.Option()] = None,
    operator: Annotated[OperatorSaid | None, typer.Option(
        help="What operators said: none, any, normal, anomalous, described, overruled."
    )] = None,
    limit: Annotated[int, typer.Option(min=1, max=500)] = 50,
    output: Annotated[Output, typer.Option("--output", "-o")] = Output.table,
) -> None:
    """What was inspected, newest first, filtered like the console's history table."""
    from sqlalchemy.orm import Session

    from pipeline.storage.history import HistoryFilter, list_verdicts
    from workers.api.routes_history import summaries

    def utc(t: datetime | None) -> datetime | None:
        return t.replace(tzinfo=UTC) if t is not None and t.tzinfo is None else t

    if last is not None:
        since = datetime.now(UTC) - timedelta(hours=last)
    from workers.api.params import defect_key

    f = HistoryFilter(line_id=line, camera_id=camera, product=product, since=utc(since),
                      until=utc(until), label=verdict.value if verdict else None,  # type: ignore[arg-type]
                      description=defect, description_key=defect_key(defect),
                      min_score=min_score, max_score=max_score, min_relative=min_relative,
                      max_relative=max_relative,
                      operator=operator.value if operator else None)  # type: ignore[arg-type]
    engine = _engine(ctx)
    with Session(engine) as session:
        rows = [s.model_dump(mode="json") for s in
                summaries(session, list_verdicts(session, f, limit=limit).items)]
    from workers.api.history_export import history_csv

    if output is Output.json:
        typer.echo(json.dumps(rows, indent=2))
    elif output is Output.csv:
        sys.stdout.write(history_csv(rows))
    else:
        from rich.console import Console
        from rich.table import Table

        table = Table("id", "captured (UTC)", "line", "camera", "product", "verdict",
                      "operator", "score / thr.", "raw score", "defects",
                      title=f"{len(rows)} verdicts (newest first)")
        for r in rows:
            shown = r["operator_label"] or r["label"]
            style = "red" if shown == "anomalous" else None
            relative = r["relative_score"]
            table.add_row(str(r["id"]), r["captured_at"][:19].replace("T", " "), r["line_id"],
                          r["camera_id"], r["product"], r["label"],
                          f"{r['operator_label']} ({r['operator_label_by']})"
                          if r["operator_label"] else "",
                          "-" if relative is None else f"{relative:.2f}",
                          f"{r['score']:.4g} / {r['threshold']:.4g}",
                          ", ".join(f"{d['text']} (operator)" if d["by_operator"] else d["text"]
                                    for d in r["defect_items"] if d["text"]), style=style)
        Console().print(table)


def api(ctx: typer.Context,
        host: Annotated[str | None, typer.Option(help="Default: CLAD_API_HOST.")] = None,
        port: Annotated[int | None, typer.Option(help="Default: CLAD_API_PORT.")] = None,
        ) -> None:
    """Serve the operator API and web console (schema must be migrated: clad db upgrade)."""
    import uvicorn

    from pipeline.storage.database import wait_for_database
    from workers.api import create_app

    settings = settings_from(ctx)
    engine = _engine(ctx)
    wait_for_database(engine, timeout_s=60)
    uvicorn.run(create_app(settings, engine), host=host or settings.api.api_host,
                port=port or settings.api.api_port, log_level="info")


@token_app.command("create")
def token_create(ctx: typer.Context,
                 name: Annotated[str, typer.Argument(help="Who holds it.")],
                 role: Annotated[Role, typer.Option()] = Role.viewer,
                 expires_days: Annotated[int | None, typer.Option(
                     min=1, max=3650, help="Days it stays valid. Default: CLAD_API_TOKEN_DAYS."
                 )] = None) -> None:
    """Create a token and print it once; only its hash is stored."""
    from pipeline.storage.database import make_session_factory, transaction
    from pipeline.storage.tokens import create_token

    days = expires_days or settings_from(ctx).api.api_token_days
    with transaction(make_session_factory(_engine(ctx))) as session:
        row, secret = create_token(session, name=name, role=role.value,
                                   expires_in=timedelta(days=days))
        typer.echo(f"token {row.id} for {row.name} ({row.role}), valid until "
                   f"{row.expires_at:%Y-%m-%d %H:%M} UTC; shown once, keep it safe:", err=True)
    typer.echo(secret)


@token_app.command("revoke")
def token_revoke(ctx: typer.Context, name: Annotated[str | None, typer.Option()] = None,
                 token_id: Annotated[int | None, typer.Option("--id")] = None) -> None:
    """Revoke every active token with this name, or the one with this id."""
    from pipeline.storage.database import make_session_factory, transaction
    from pipeline.storage.tokens import revoke_tokens

    if (name is None) == (token_id is None):
        raise typer.BadParameter("give --name or --id")
    with transaction(make_session_factory(_engine(ctx))) as session:
        count = revoke_tokens(session, name=name, token_id=token_id)
    typer.echo(f"revoked {count} token(s)")
    if count == 0:
        raise typer.Exit(1)


@token_app.command("list")
def token_list(ctx: typer.Context) -> None:
    """Tokens by id, name, role, state and expiry (never the secrets)."""
    from sqlalchemy.orm import Session

    from pipeline.storage.tokens import list_tokens, token_state

    now = datetime.now(UTC)
    with Session(_engine(ctx)) as session:
        for t in list_tokens(session):
            typer.echo(f"{t.id}\t{t.name}\t{t.role}\t{token_state(t, now)}"
                       f"\texpires {t.expires_at:%Y-%m-%d}")


@frames_app.command("purge")
def frames_purge(ctx: typer.Context) -> None:
    """Drop frame bytes older than CLAD_FRAME_RETENTION_DAYS (rows and verdicts stay)."""
    from pipeline.storage.database import make_session_factory, transaction
    from pipeline.storage.frame_store import purge_frames

    cfg = settings_from(ctx).api
    if cfg.frame_retention_days == 0:
        typer.echo("retention is 0 (keep forever): nothing to do")
        return
    cutoff = datetime.now(UTC) - timedelta(days=cfg.frame_retention_days)
    with transaction(make_session_factory(_engine(ctx))) as session:
        count = purge_frames(session, older_than=cutoff, frame_dir=cfg.frame_dir)
    typer.echo(f"dropped the bytes of {count} frame(s) captured before {cutoff:%Y-%m-%d %H:%M}")


def register(app: typer.Typer) -> None:
    app.command("history")(history)
    app.command("api")(api)
    app.add_typer(token_app, name="token")
    app.add_typer(frames_app, name="frames")
