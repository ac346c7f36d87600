import uuid
from datetime import UTC, datetime

import pytest

from pipeline.storage.labels import TrainingExample, TrainingRegion
from workers.retraining.fingerprint import data_fingerprint, unchanged_since

pytestmark = pytest.mark.unit


def _example(i: int, label: str = "normal", author: str = "qa",
             regions: tuple[TrainingRegion, ...] = ()) -> TrainingExample:
    return TrainingExample(verdict_id=i, frame_id=uuid.UUID(int=i), product="p", camera_id="c",
                           captured_at=datetime(2026, 1, 1, tzinfo=UTC), label=label,
                           image_ref=None, has_image_bytes=True, regions=list(regions),
                           labelled_by=author)


def test_fingerprint_follows_what_is_learnt_not_who_said_it_or_the_order() -> None:
    base = [_example(1), _example(2, "anomalous")]
    fp = data_fingerprint(base, config={"epochs": 15})
    assert fp == data_fingerprint(base[::-1], config={"epochs": 15})
    assert fp == data_fingerprint([_example(1, author="other"), base[1]], config={"epochs": 15})
    assert fp != data_fingerprint(base, config={"epochs": 16})
    assert fp != data_fingerprint([_example(1, "anomalous"), base[1]], config={"epochs": 15})
    assert fp != data_fingerprint([*base, _example(3)], config={"epochs": 15})
    region = TrainingRegion({"size": [2, 2], "counts": [1, 3]}, "scratch", "operator")
    assert fp != data_fingerprint([base[0], _example(2, "anomalous", regions=(region,))],
                                  config={"epochs": 15})


def test_an_outcome_stands_only_for_the_champion_it_was_trained_from() -> None:
    rows = [("r2", "rejected", {"fingerprint": "f", "parent": "c1"}),
            ("c1", "active", {"fingerprint": "old"})]
    assert unchanged_since("f", "c1", rows) == ("r2", "rejected")
    assert unchanged_since("g", "c1", rows) is None
    assert unchanged_since("f", "c2", rows) is None  # another champion: worth a run
    promoted = [("c2", "active", {"fingerprint": "f", "parent": "c1"})]
    assert unchanged_since("f", "c2", promoted) == ("c2", "active")
    stopped = [("r3", "candidate", {"fingerprint": "f", "parent": "c1"})]
    assert unchanged_since("f", "c1", stopped) is None
