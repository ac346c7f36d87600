"""The published OpenAPI document is what the running API does: schemathesis, every check.

The API runs under uvicorn on a seeded store, as deployed; schemathesis reads its
/openapi.json and sends generated requests (valid and invalid, with and without the
admin token) to every operation, checking each response against the document: status
codes, content types, headers, bodies, that invalid input is refused and valid input
accepted, OPTIONS and Allow, authentication, and links between operations. Examples
are bounded so the run stays around a minute.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
import uvicorn
from sqlalchemy import Engine

from pipeline.settings import AlarmSettings, ApiSettings, Settings
from pipeline.storage.database import transaction
from pipeline.storage.models import AlarmRule
from tests.integration.operator_data import T0, Seeded
from tests.integration.pipeline_support import free_port
from workers.api import create_app

pytestmark = [pytest.mark.integration, pytest.mark.slow]
EXAMPLES = 10  # per operation and phase
REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def api_url(pg_engine: Engine, seeded: Seeded) -> Iterator[str]:
    settings = Settings(api=ApiSettings(api_docs="public"),
                        alarms=AlarmSettings(alarm_interval_s=0))
    app = create_app(settings, pg_engine, clock=lambda: T0 + timedelta(hours=4))
    # One open alarm, so acknowledging has something to reach past its 404.
    with transaction(app.state.sessions) as session:
        session.add(AlarmRule(name="line-1 spike", scope="line", target="line-1",
                              max_rate=0.5, window_minutes=60, min_verdicts=1,
                              created_by="test", created_at=T0))
    assert app.state.alarms.run_once() == 1
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=free_port(),
                                           log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    for _ in range(400):
        if server.started:
            break
        threading.Event().wait(0.05)
    assert server.started, "uvicorn did not start"
    yield f"http://127.0.0.1:{server.config.port}"
    server.should_exit = True
    thread.join(timeout=10)


def test_every_operation_conforms_to_the_published_schema(api_url: str, seeded: Seeded,
                                                          tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "schemathesis.cli", "run", f"{api_url}/openapi.json",
         "--checks", "all", "--max-examples", str(EXAMPLES), "--seed", "31",
         "--header", f"Authorization: Bearer {seeded.tokens['admin']}",
         # One worker: CPython 3.11's ast is not thread-safe (gh-106905: "AST constructor
         # recursion depth mismatch" when two threads build schemas' strategies at once).
         "--request-timeout", "30", "--workers", "1", "--no-color",
         "--report", "junit", "--report-dir", str(tmp_path)],
        env={**os.environ, "SCHEMATHESIS_HOOKS": "tests.integration.schemathesis_hooks",
             "PYTHONPATH": str(REPO)}, cwd=tmp_path,  # its cache stays out of the repo
        capture_output=True, text=True, timeout=900)
    print(done.stdout[-20000:])
    assert done.returncode == 0, done.stdout[-12000:] + done.stderr[-3000:]
