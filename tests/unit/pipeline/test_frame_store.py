"""Frame bytes kept per mode, for a whole batch at once (SQLite, no services)."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from pathlib import Path

import pytest
from sqlalchemy.orm import Session

from pipeline.settings import ApiSettings
from pipeline.storage.database import make_engine
from pipeline.storage.frame_store import load_frame, store_frames
from pipeline.storage.migrate import upgrade
from pipeline.storage.models import Frame
from pipeline.storage.records import VerdictRecord
from pipeline.storage.repository import write_verdicts

pytestmark = pytest.mark.unit


def _verdict(frame_id: uuid.UUID) -> VerdictRecord:
    return VerdictRecord(
        frame_id=frame_id, camera_id="cam", line_id="line", product="p",
        captured_at=datetime.now(UTC), width=4, height=4, content_type="image/png",
        model_version="v1", score=0.1, threshold=0.5, label="normal")


@pytest.mark.parametrize("mode", ["database", "directory", "none"])
def test_a_batch_of_frames_is_kept_as_configured(mode: str, tmp_path: Path) -> None:
    engine = make_engine(f"sqlite:///{tmp_path / 'clad.db'}")
    upgrade(engine)
    settings = ApiSettings(frame_storage=mode, frame_dir=tmp_path / "frames")
    ids = [uuid.uuid4(), uuid.uuid4(), uuid.uuid4()]
    payloads = {fid: f"bytes of {i}".encode() for i, fid in enumerate(ids)}
    with Session(engine) as session, session.begin():
        assert write_verdicts(session, [_verdict(fid) for fid in ids]) == 3
        store_frames(session, settings,
                     [(fid, payloads[fid], "image/jpeg" if i else "image/png")
                      for i, fid in enumerate(ids)])
    with Session(engine) as session:
        frames = {f.id: f for f in session.query(Frame).all()}
        for i, fid in enumerate(ids):
            frame = frames[fid]
            expected = None if mode == "none" else payloads[fid]
            assert load_frame(frame, settings.frame_dir) == expected
            if mode == "directory":
                assert frame.image_bytes is None
                assert frame.image_ref.endswith(".png" if i == 0 else ".jpg")
                assert frame.image_ref.startswith(fid.hex[:2] + "/")
            elif mode == "database":
                assert frame.image_ref is None
    engine.dispose()
