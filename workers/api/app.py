"""The app factory: everything is built here from settings and an engine, never at import."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path

from fastapi import Depends, FastAPI
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import HTMLResponse, JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from fastapi.templating import Jinja2Templates
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from sqlalchemy import Engine

from pipeline.settings import EMBEDDED_BROKER, Settings
from pipeline.storage.database import make_session_factory, transaction
from pipeline.storage.tokens import ensure_bootstrap_token
from workers.api import (
    console,
    console_live,
    console_login,
    routes_alarms,
    routes_history,
    routes_labels,
    routes_regions,
    routes_review,
)
from workers.api.alarm_runner import AlarmEvaluator, AlarmMetrics, EventSender, KafkaSender
from workers.api.auth import require
from workers.api.errors import install_error_handlers
from workers.api.openapi import install_document

log = logging.getLogger(__name__)
HERE = Path(__file__).resolve().parent
SWAGGER_UI = "/static/swagger-ui"  # swagger-ui-dist 5.36.0 from npm, with its licence


def _utcnow() -> datetime:
    return datetime.now(UTC)


def create_app(settings: Settings, engine: Engine, *,
               clock: Callable[[], datetime] = _utcnow,
               alarm_sender: EventSender | None = None) -> FastAPI:
    """The operator API and console over `engine` (schema already migrated).

    Alarm events go to `alarm_sender`, else to the alarms topic of the configured
    broker; with the embedded (demo) broker address there is none and they wait.
    """
    destination = "sent once through this API's alarm sender"
    if alarm_sender is None and settings.kafka.bootstrap_servers != EMBEDDED_BROKER:
        alarm_sender = KafkaSender(settings.kafka, settings.alarms.alarm_topic)
        destination = (f"sent once to the Kafka topic '{settings.alarms.alarm_topic}' on "
                       f"{settings.kafka.bootstrap_servers}")

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        if settings.alarms.alarm_interval_s > 0:
            app.state.alarms.start(settings.alarms.alarm_interval_s)
        yield
        app.state.alarms.stop()
        if isinstance(alarm_sender, KafkaSender):
            alarm_sender.close()

    app = FastAPI(
        lifespan=lifespan,
        title="clad-line operator API",
        version="1",
        description="Defect history, verdicts with heatmaps and regions, operator labels "
                    "and model versions. Authenticate with `Authorization: Bearer <token>`; "
                    "roles: viewer (read) < operator (label) < admin (promote models).",
        # Served (or not) by _add_docs according to CLAD_API_DOCS.
        openapi_url=None, docs_url=None, redoc_url=None,
    )
    app.state.settings = settings
    app.state.sessions = make_session_factory(engine)
    app.state.clock = clock
    app.state.templates = Jinja2Templates(directory=str(HERE / "templates"))
    app.state.metrics = CollectorRegistry()
    app.state.alarms = AlarmEvaluator(app.state.sessions, AlarmMetrics(app.state.metrics),
                                      clock, alarm_sender, destination)
    # The console links to /docs only where CLAD_API_DOCS serves it.
    app.state.templates.env.globals["api_docs"] = settings.api.api_docs != "off"
    install_error_handlers(app)
    install_document(app)
    app.include_router(routes_history.router)
    app.include_router(routes_labels.router)
    app.include_router(routes_review.router)
    app.include_router(routes_regions.router)
    app.include_router(routes_alarms.router)
    app.include_router(console.router)
    app.include_router(console_login.router)
    app.include_router(console_live.router)
    app.mount("/static", StaticFiles(directory=str(HERE / "static")), name="static")
    if settings.api.api_docs != "off":
        _add_docs(app, public=settings.api.api_docs == "public")

    @app.get("/healthz", include_in_schema=False)
    def healthz() -> dict[str, str]:
        # Liveness (deploy/ probes it): the process answers. It does not ask the
        # database, so an outage gives 503s on data routes, not a restart loop.
        return {"status": "ok"}

    @app.get("/metrics", include_in_schema=False, dependencies=[Depends(require("viewer"))])
    def metrics() -> Response:
        # Prometheus scrapes with a viewer token (authorization: credentials_file).
        return Response(generate_latest(app.state.metrics), media_type=CONTENT_TYPE_LATEST)

    bootstrap = settings.api.api_bootstrap_token
    if bootstrap is not None:
        with transaction(app.state.sessions) as session:
            if ensure_bootstrap_token(session, bootstrap.get_secret_value(),
                                      expires_in=timedelta(days=settings.api.api_token_days)):
                log.info("stored the bootstrap admin token (CLAD_API_BOOTSTRAP_TOKEN)")
    return app


def _add_docs(app: FastAPI, *, public: bool) -> None:
    """/openapi.json and /docs; unless public, the document needs a valid token.

    The /docs page itself holds no data; in a browser it fetches the document
    with the console's session cookie, so signing in to the console first opens it.
    """
    guard = [] if public else [Depends(require("viewer"))]

    @app.get("/openapi.json", include_in_schema=False, dependencies=guard)
    def openapi_document() -> JSONResponse:
        return JSONResponse(app.openapi())

    @app.get("/docs", include_in_schema=False)
    def docs_page() -> HTMLResponse:
        # Swagger UI is vendored under /static (plants run offline): no CDN, no
        # validator badge calling out (validatorUrl null).
        return get_swagger_ui_html(
            openapi_url="/openapi.json", title=f"{app.title} docs",
            swagger_js_url=f"{SWAGGER_UI}/swagger-ui-bundle.js",
            swagger_css_url=f"{SWAGGER_UI}/swagger-ui.css",
            swagger_favicon_url=f"{SWAGGER_UI}/favicon-32x32.png",
            swagger_ui_parameters={"validatorUrl": None})
