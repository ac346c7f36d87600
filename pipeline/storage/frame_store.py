"""Original frame bytes: kept in the database, in a directory, or not at all.

The mode is `ApiSettings.frame_storage`. Small deployments keep bytes in
`frames.image_bytes`; large ones write files under `frame_dir` and store the
relative path in `frames.image_ref` (an object-store key fits the same column
once a bucket backend is added). Retention drops the bytes of old frames but
keeps their rows, so verdicts and labels stay readable.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path

from sqlalchemy import bindparam, delete, or_, select, update
from sqlalchemy.orm import Session

from pipeline.settings import ApiSettings
from pipeline.storage.models import Frame, Thumbnail, Verdict

log = logging.getLogger(__name__)
_EXTENSIONS = {"image/png": ".png", "image/jpeg": ".jpg", "image/jpg": ".jpg"}


def store_frame(session: Session, settings: ApiSettings, *, frame_id: uuid.UUID, data: bytes,
                content_type: str) -> None:
    """Attach the frame's bytes to its row as configured (the row must exist)."""
    store_frames(session, settings, [(frame_id, data, content_type)])


def store_frames(session: Session, settings: ApiSettings,
                 frames: Sequence[tuple[uuid.UUID, bytes, str]]) -> None:
    """store_frame for a batch: one UPDATE executed with many parameter sets."""
    if settings.frame_storage == "none" or not frames:
        return
    table = Frame.__table__
    by_id = table.c.id == bindparam("frame_id")
    if settings.frame_storage == "database":
        session.execute(update(table).where(by_id).values(image_bytes=bindparam("data")),
                        [{"frame_id": fid, "data": data} for fid, data, _ct in frames])
        return
    refs = []
    for frame_id, data, content_type in frames:
        # Two hex levels keep directories small at millions of frames.
        name = f"{frame_id.hex[:2]}/{frame_id.hex}{_EXTENSIONS.get(content_type, '.bin')}"
        path = settings.frame_dir / name
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(path.suffix + ".tmp")
        tmp.write_bytes(data)
        tmp.replace(path)  # atomic: a reader never sees half a file
        refs.append({"frame_id": frame_id, "ref": name})
    session.execute(update(table).where(by_id).values(image_ref=bindparam("ref")), refs)


def load_frame(frame: Frame, frame_dir: Path) -> bytes | None:
    """The frame's bytes from wherever they were kept, or None if gone."""
    if frame.image_bytes is not None:
        return frame.image_bytes
    if frame.image_ref:
        path = (frame_dir / frame.image_ref).resolve()
        # image_ref comes from our own writes, but never follow one out of frame_dir.
        if frame_dir.resolve() in path.parents and path.is_file():
            return path.read_bytes()
    return None


def purge_frames(session: Session, *, older_than: datetime, frame_dir: Path) -> int:
    """Drop the bytes (column and file) of frames captured before `older_than`."""
    rows = session.execute(
        select(Frame.id, Frame.image_ref).where(
            Frame.captured_at < older_than,
            or_(Frame.image_bytes.is_not(None), Frame.image_ref.is_not(None)))).all()
    for _, ref in rows:
        if ref:
            path = frame_dir / ref
            try:
                path.unlink()
            except FileNotFoundError:
                log.debug("frame file %s already gone", path)
    if rows:
        ids = [r[0] for r in rows]
        session.execute(update(Frame).where(Frame.id.in_(ids))
                        .values(image_bytes=None, image_ref=None))
        # Thumbnails are pictures of those frames too: they go with them.
        session.execute(delete(Thumbnail).where(Thumbnail.verdict_id.in_(
            select(Verdict.id).where(Verdict.frame_id.in_(ids)))))
    return len(rows)
