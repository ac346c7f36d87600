"""Thumbnails rendered once and stored (table `thumbnails`), so a page of 50 history rows
reads 50 small rows instead of decoding 50 full frames on every visit.

A verdict's heatmap, regions and frame never change once written, and thumbnails
carry no words (an operator's correction does not change them), so a stored one is
never stale. Frame retention (`clad frames purge`) drops them with the frame bytes.
"""

from __future__ import annotations

from collections.abc import Callable

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from pipeline.storage.models import Thumbnail, utcnow

STORED_SIDES = (64, 96, 128, 256)  # the sizes the console asks for
# Browsers may keep them as long as they like: the bytes behind a URL never change.
CACHE_CONTROL = "private, max-age=86400, immutable"


def stored(session: Session, verdict_id: int, variant: str) -> bytes | None:
    return session.scalar(select(Thumbnail.png).where(Thumbnail.verdict_id == verdict_id,
                                                      Thumbnail.variant == variant))


def stored_or_rendered(session: Session, verdict_id: int, variant: str,
                       render: Callable[[], bytes]) -> bytes:
    """The stored thumbnail, else `render()` stored for next time. Two requests that
    render the same one at once both answer; the second insert is dropped."""
    png = stored(session, verdict_id, variant)
    if png is not None:
        return png
    png = render()
    try:
        with session.begin_nested():
            session.add(Thumbnail(verdict_id=verdict_id, variant=variant, png=png,
                                  created_at=utcnow()))
    except IntegrityError:
        pass  # another request stored it first: same bytes
    return png
