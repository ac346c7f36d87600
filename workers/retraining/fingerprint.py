"""What a retrain would learn from, as one hash: when it has not changed since the last
run from the same champion, training again can only give the same figures.

The fingerprint covers every confirmed example of the product (frame, class, the masks
and descriptions of its regions), the training options and the champion's scoring config.
Who labelled and when do not count: the same word said twice teaches nothing new.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping
from typing import Any

from pipeline.storage.labels import TrainingExample


def data_fingerprint(examples: Iterable[TrainingExample], *, config: Mapping[str, Any]) -> str:
    """sha256 hex of the examples (in any order) and the config."""
    rows = sorted(
        json.dumps([str(e.frame_id), e.label,
                    sorted(json.dumps([r.mask_rle, r.description, r.source], sort_keys=True)
                           for r in e.regions)])
        for e in examples)
    digest = hashlib.sha256()
    digest.update(json.dumps(dict(config), sort_keys=True, default=str).encode())
    for row in rows:
        digest.update(b"\n" + row.encode())
    return digest.hexdigest()


def unchanged_since(fingerprint: str, champion_version: str,
                    rows: Iterable[tuple[str, str, Mapping[str, Any]]]) -> tuple[str, str] | None:
    """(version, status) of an earlier retrain with this fingerprint whose outcome still
    stands: it is the champion (promoted), or it was trained from the champion (rejected).
    `rows`: (version, status, metrics) of the product's registered versions."""
    for version, status, metrics in rows:
        # a candidate is a run stopped between registering and promoting: not an outcome
        if status == "candidate" or (metrics or {}).get("fingerprint") != fingerprint:
            continue
        if version == champion_version or (metrics or {}).get("parent") == champion_version:
            return version, status
    return None
