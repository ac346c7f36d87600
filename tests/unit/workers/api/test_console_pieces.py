"""The console's small pure pieces: kind labels, the one-key confirm, CSV cells, which
requests get HTML errors, label states, the demo's run folders and printed commands."""

from __future__ import annotations

import csv
import io
from datetime import UTC, datetime
from pathlib import Path

from pipeline.settings import Settings
from workers.api.console import label_states
from workers.api.errors import wants_html
from workers.api.history_export import CSV_COLUMNS, history_csv
from workers.api.kinds import confirmable, kind_label
from workers.api.schemas import LabelOut
from workers.demo.console_hint import console_commands, new_run_folder


def test_kind_labels_read_as_words() -> None:
    assert kind_label("bent_lead") == "bent lead"
    assert kind_label("unclear") == "unnamed"
    assert kind_label("scratch on the neck") == "scratch on the neck"  # stored before kinds
    assert kind_label("other") == "other"


def test_only_a_single_named_kind_can_be_confirmed() -> None:
    assert confirmable("bent_lead", "a bent lead") == "a bent lead"
    assert confirmable("contamination", "contamination") == "contamination"
    assert confirmable("scratch", "a scratch or a cut") is None  # a group answer
    assert confirmable("unclear", "unnamed: a dark spot") is None
    assert confirmable(None, "a scratch") is None


def _row(**over: object) -> dict:
    row = {"id": 7, "captured_at": "2026-11-23T08:00:00", "line_id": "l", "camera_id": "c",
           "product": "p", "label": "anomalous", "operator_label": "normal",
           "operator_label_by": "ann", "relative_score": 1.2345678, "score": 0.61728394,
           "threshold": 0.5, "defect_items": [
               {"text": "a crack", "kind": "crack", "by_operator": True,
                "describer_text": "a dent"},
               {"text": "unnamed: a dark spot", "kind": "unclear", "by_operator": False,
                "describer_text": "unnamed: a dark spot"}]}
    return {**row, **over}


def test_csv_marks_the_operators_words_keeps_the_describers_and_zones_times() -> None:
    rows = list(csv.reader(io.StringIO(history_csv([_row()]))))
    assert rows[0] == CSV_COLUMNS
    cells = dict(zip(rows[0], rows[1], strict=True))
    assert cells["captured_at"] == "2026-11-23T08:00:00+00:00"  # SQLite's zoneless time
    assert (cells["relative_score"], cells["score"], cells["threshold"]) == (
        "1.2346", "0.6173", "0.5000")
    assert cells["defects"] == "a crack (operator); unnamed: a dark spot"
    assert cells["defect_kinds"] == "crack; unclear"
    assert cells["describer_defects"] == "a dent; unnamed: a dark spot"
    assert (cells["label"], cells["operator_label"]) == ("anomalous", "normal")


def test_html_errors_only_for_a_browser_opening_a_page() -> None:
    assert wants_html("GET", "text/html,application/xhtml+xml,*/*;q=0.8")
    assert not wants_html("GET", "*/*") and not wants_html("GET", "application/json")
    assert not wants_html("POST", "text/html")


def _label(i: int, label: str, region: int | None = None) -> LabelOut:
    return LabelOut(id=i, verdict_id=1, region_id=region, label=label, description=None,
                    mask_rle=None, author="a", created_at=datetime(2026, 1, 1, tzinfo=UTC))


def test_the_latest_word_is_current_the_earlier_ones_superseded() -> None:
    labels = [_label(1, "anomalous"), _label(2, "description", 5), _label(3, "normal"),
              _label(4, "description", 6), _label(5, "description", 5),
              _label(6, "missing_region")]
    assert label_states(labels) == {1: "superseded", 2: "superseded", 3: "current",
                                    4: "current", 5: "current"}


def test_each_demo_run_gets_its_own_folder_and_latest_points_at_it(tmp_path: Path) -> None:
    when = datetime(2026, 12, 7, 10, 15, 0, tzinfo=UTC)
    first = new_run_folder(tmp_path, when)
    second = new_run_folder(tmp_path, when)
    assert (first.name, second.name) == ("run-20261207-101500", "run-20261207-101500-2")
    assert first.is_dir() and (tmp_path / "latest").resolve() == second


def test_printed_commands_name_the_database_and_the_console_address() -> None:
    commands = console_commands(Settings(), "sqlite:////tmp/a b/demo.db", wrapper="clad")
    assert commands[0] == "export CLAD_DATABASE_URL='sqlite:////tmp/a b/demo.db'"
    assert commands[1].startswith("clad user create demo --role admin")
    assert "open http://127.0.0.1:8080 and sign in as demo" in commands[2]
    # A configured Postgres URL is already in the environment: not printed again.
    assert not console_commands(Settings(), "postgresql+psycopg://u@h/db",
                                wrapper="clad")[0].startswith("export")
