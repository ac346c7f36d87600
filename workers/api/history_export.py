"""The history as CSV: one writer for `clad history -o csv` and the console's export,
so both give the same bytes for the same filters.

Times are ISO 8601 in UTC with their offset (whatever the database hands back);
scores keep 4 decimals, the raw score beside the relative one (1.0 = the threshold).
What a region shows is the operator's description when there is one, marked
"(operator)", and the describer's own answers stay in their own column.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any

CSV_COLUMNS = ["id", "captured_at", "line_id", "camera_id", "product", "label",
               "operator_label", "operator_label_by", "relative_score", "score", "threshold",
               "defects", "defect_kinds", "describer_defects"]


def _time(value: str) -> str:
    when = datetime.fromisoformat(value.replace("Z", "+00:00"))
    when = when.replace(tzinfo=UTC) if when.tzinfo is None else when.astimezone(UTC)
    return when.isoformat()


def _number(value: float | None) -> str:
    return "" if value is None else f"{value:.4f}"


def csv_row(r: dict[str, Any]) -> list[Any]:
    """One VerdictSummary.model_dump(mode="json") as the CSV's cells."""
    items = r.get("defect_items") or []
    shown = [f"{d['text']} (operator)" if d["by_operator"] else d["text"]
             for d in items if d["text"]]
    return [r["id"], _time(r["captured_at"]), r["line_id"], r["camera_id"], r["product"],
            r["label"], r.get("operator_label") or "", r.get("operator_label_by") or "",
            _number(r.get("relative_score")), _number(r["score"]), _number(r["threshold"]),
            "; ".join(shown), "; ".join(dict.fromkeys(d["kind"] for d in items if d["kind"])),
            "; ".join(d["describer_text"] for d in items if d["describer_text"])]


def history_csv(rows: Iterable[dict[str, Any]]) -> str:
    """Rows are VerdictSummary.model_dump(mode="json")."""
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(CSV_COLUMNS)
    for r in rows:
        writer.writerow(csv_row(r))
    return out.getvalue()
