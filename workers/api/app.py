"""The app factory: everything is built here from settings and an engine, never at import."""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

from fastapi import FastAPI
from fastapi.staticfiles import StaticFiles
from fastapi.templating import Jinja2Templates
from sqlalchemy import Engine

from pipeline.settings import Settings
from pipeline.storage.database import make_session_factory, transaction
from pipeline.storage.tokens import ensure_bootstrap_token
from workers.api import console, routes_history, routes_labels
from workers.api.errors import install_error_handlers

log = logging.getLogger(__name__)
HERE = Path(__file__).resolve().parent


def _utcnow() -> datetime:
    return datetime.now(UTC)


def create_app(settings: Settings, engine: Engine, *,
               clock: Callable[[], datetime] = _utcnow) -> FastAPI:
    """The operator API and console over `engine` (schema already migrated)."""
    app = FastAPI(
        title="clad-line operator API",
        version="1",
        description="Defect history, verdicts with heatmaps and regions, operator labels "
                    "and model versions. Authenticate with `Authorization: Bearer <token>`; "
                    "roles: viewer (read) < operator (label) < admin (promote models).",
    )
    app.state.settings = settings
    app.state.sessions = make_session_factory(engine)
    app.state.clock = clock
    app.state.templates = Jinja2Templates(directory=str(HERE / "templates"))
    install_error_handlers(app)
    app.include_router(routes_history.router)
    app.include_router(routes_labels.router)
    app.include_router(console.router)
    app.mount("/static", StaticFiles(directory=str(HERE / "static")), name="static")

    bootstrap = settings.api.api_bootstrap_token
    if bootstrap is not None:
        with transaction(app.state.sessions) as session:
            if ensure_bootstrap_token(session, bootstrap.get_secret_value()):
                log.info("stored the bootstrap admin token (CLAD_API_BOOTSTRAP_TOKEN)")
    return app
