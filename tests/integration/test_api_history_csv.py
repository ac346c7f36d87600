"""The console's CSV export gives the same bytes as `clad history -o csv` for the same
filters (the CLI run as a process on the same database)."""

from __future__ import annotations

import csv
import io
import subprocess
import sys
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from tests.integration.operator_data import SPEC, Seeded

pytestmark = pytest.mark.integration
REPO_ROOT = Path(__file__).resolve().parents[2]
# (API query, the same filters as CLI options)
CASES = [
    ({}, []),
    ({"line": "line-1", "verdict": "anomalous"}, ["--line", "line-1", "--verdict", "anomalous"]),
    ({"defect": "contamination", "limit": "2"}, ["--defect", "contamination", "--limit", "2"]),
    ({"camera": "cam-c", "since": "2026-11-23T09:00:00", "until": "2026-11-23T11:00:00",
      "min_score": "0.3"},
     ["--camera", "cam-c", "--since", "2026-11-23T09:00:00", "--until",
      "2026-11-23T11:00:00", "--min-score", "0.3"]),
]


def _cli_csv(postgres_url: str, options: list[str], cwd: Path) -> str:
    env = {"CLAD_DATABASE_URL": postgres_url, "PATH": "/usr/bin:/bin",
           "PYTHONPATH": str(REPO_ROOT)}
    run = subprocess.run([sys.executable, "-m", "workers.cli.main", "history", "-o", "csv",
                          *options], capture_output=True, env=env, cwd=cwd, check=False)
    assert run.returncode == 0, run.stderr.decode()
    return run.stdout.decode()  # bytes as written: the CSV's \r\n line ends kept


@pytest.mark.parametrize(("query", "options"), CASES)
def test_csv_export_equals_clad_history_csv(client: TestClient, seeded: Seeded,
                                            postgres_url: str, tmp_path: Path,
                                            query: dict, options: list[str]) -> None:
    r = client.get("/api/v1/verdicts.csv", params=query,
                   headers={"Authorization": f"Bearer {seeded.tokens['viewer']}"})
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/csv")
    assert r.text.count("\r\n") > 1  # a header and at least one row
    assert r.text == _cli_csv(postgres_url, options, tmp_path)


def test_csv_rows_are_the_filtered_verdicts(client: TestClient, seeded: Seeded) -> None:
    r = client.get("/api/v1/verdicts.csv", params={"line": "line-1", "verdict": "anomalous"},
                   headers={"Authorization": f"Bearer {seeded.tokens['viewer']}"})
    rows = list(csv.DictReader(io.StringIO(r.text)))
    expected = sorted((s for s in SPEC if s.line_id == "line-1" and s.label == "anomalous"),
                      key=lambda s: s.captured_at, reverse=True)
    assert [int(x["id"]) for x in rows] == [seeded.verdict_ids[s.index] for s in expected]
    assert [x["defects"] for x in rows] == ["; ".join(s.defects) for s in expected]
