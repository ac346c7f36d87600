"""Regions one at a time: a picture of one, the unnamed regions that look like it, and
one description given to a whole group of them (the review queue's group labelling)."""

from __future__ import annotations

from datetime import timedelta
from typing import Annotated

from fastapi import APIRouter, Depends, Path, Query, Request, Response
from sqlalchemy import select
from sqlalchemy.orm import Session

from engine.defects.kind_names import kind_key
from pipeline.storage.frame_store import load_frame
from pipeline.storage.labels import LabelError, add_label
from pipeline.storage.models import Frame, Region, Verdict
from pipeline.storage.region_groups import Pool, load_pool
from pipeline.storage.tokens import Principal
from workers.api.auth import SessionDep, require
from workers.api.errors import ApiError
from workers.api.openapi import errors
from workers.api.routes_history import PNG, load_verdict
from workers.api.schemas import LabelOut, RegionGroupLabelIn, SimilarRegionOut
from workers.api.thumbnails import CACHE_CONTROL, STORED_SIDES, stored, stored_or_rendered
from workers.api.values import MAX_DB_ID

router = APIRouter(prefix="/api/v1", tags=["regions"])
RegionId = Annotated[int, Path(ge=1, le=MAX_DB_ID, description="Region id.")]


def _region(session: Session, region_id: int) -> Region:
    region = session.get(Region, region_id)
    if region is None:
        raise ApiError(404, f"region {region_id} not found")
    return region


@router.get("/regions/{region_id}/thumb.png", response_class=Response, responses=PNG,
            dependencies=[Depends(require("viewer"))],
            summary="The region cut out of its frame, outlined (stored once per size)")
def region_thumbnail(region_id: RegionId, request: Request, session: SessionDep,
                     max_side: Annotated[int, Query(ge=16, le=512)] = 96) -> Response:
    from workers.api.images import region_png

    region = _region(session, region_id)
    variant = f"region-{region.index}-{max_side}"
    if max_side in STORED_SIDES and (png := stored(session, region.verdict_id, variant)):
        return Response(png, media_type="image/png", headers={"Cache-Control": CACHE_CONTROL})
    verdict, height, width = load_verdict(session, region.verdict_id)

    def render() -> bytes:
        frame = session.get(Frame, verdict.frame_id)
        assert frame is not None  # verdicts.frame_id is a foreign key
        return region_png(verdict, region.index,
                          load_frame(frame, request.app.state.settings.api.frame_dir),
                          height, width, max_side)

    png = (stored_or_rendered(session, verdict.id, variant, render)
           if max_side in STORED_SIDES else render())
    return Response(png, media_type="image/png", headers={"Cache-Control": CACHE_CONTROL})


def region_pool(request: Request, session: Session, region: Region, product: str) -> Pool:
    """The unnamed regions of the region's product and describer in the review window
    (and the region itself, however old)."""
    until = request.app.state.clock()
    since = until - timedelta(hours=request.app.state.settings.review.review_window_hours)
    return load_pool(session, product=product, describer=region.describer or "",
                     since=since, until=until, include=region.id)


@router.get("/regions/{region_id}/similar", response_model=list[SimilarRegionOut],
            dependencies=[Depends(require("viewer"))], responses=errors(404),
            summary="Unnamed regions of the same product that look like this one")
def similar_regions(region_id: RegionId, request: Request, session: SessionDep,
                    min_similarity: Annotated[float | None, Query(
                        ge=0.0, le=1.0, description="Cosine at least; default "
                        "CLAD_REVIEW_GROUP_SIMILARITY.")] = None,
                    limit: Annotated[int, Query(ge=1, le=200)] = 100,
                    ) -> list[SimilarRegionOut]:
    region = _region(session, region_id)
    product = session.scalar(select(Verdict.product).where(Verdict.id == region.verdict_id))
    if region.embedding is None or region.describer is None:
        return []
    bound = (request.app.state.settings.review.review_group_similarity
             if min_similarity is None else min_similarity)
    found = region_pool(request, session, region, str(product)).similar(region.id, bound,
                                                                         limit)
    if not found:
        return []
    rows = {r.id: (r, when) for r, when in session.execute(
        select(Region, Verdict.captured_at).join(Verdict, Verdict.id == Region.verdict_id)
        .where(Region.id.in_([f[0] for f in found])))}
    return [SimilarRegionOut(region_id=rid, verdict_id=vid, index=rows[rid][0].index,
                             similarity=round(sim, 4), captured_at=rows[rid][1],
                             text=rows[rid][0].operator_description or rows[rid][0].description,
                             kind=rows[rid][0].operator_kind or rows[rid][0].kind,
                             thumbnail=f"/api/v1/regions/{rid}/thumb.png")
            for rid, vid, sim in found]


@router.post("/region-labels", response_model=list[LabelOut], status_code=201,
             tags=["labels"], responses=errors(404),
             summary="One description for a group of regions (one label on each)")
def label_regions(body: RegionGroupLabelIn,
                  principal: Annotated[Principal, Depends(require("operator"))],
                  session: SessionDep) -> list[LabelOut]:
    ids = list(dict.fromkeys(body.region_ids))
    owners = dict(session.execute(select(Region.id, Region.verdict_id)
                                  .where(Region.id.in_(ids))).all())
    missing = [i for i in ids if i not in owners]
    if missing:  # all or nothing: a group is named whole or not at all
        raise ApiError(404, f"regions not found: {', '.join(map(str, missing[:20]))}")
    out = []
    try:
        for region_id in ids:
            row = add_label(session, verdict_id=owners[region_id], label="description",
                            author=principal.name, region_id=region_id,
                            description=body.description, kind_of=kind_key)
            out.append(LabelOut.model_validate(row, from_attributes=True))
    except LabelError as exc:
        raise ApiError(422, str(exc)) from None
    return out
