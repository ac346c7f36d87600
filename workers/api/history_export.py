"""The history as CSV: one writer for `clad history -o csv` and the console's export,
so both give the same bytes for the same filters."""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable
from typing import Any

CSV_COLUMNS = ["id", "captured_at", "line_id", "camera_id", "product", "label", "score",
               "defects"]


def history_csv(rows: Iterable[dict[str, Any]]) -> str:
    """Rows are VerdictSummary.model_dump(mode="json"); defects joined with '; '."""
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(CSV_COLUMNS)
    for r in rows:
        writer.writerow([*(r[c] for c in CSV_COLUMNS[:-1]), "; ".join(r["defects"])])
    return out.getvalue()
