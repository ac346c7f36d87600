"""Write routes: operator labels (operator and up) and model promotion (admin)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Path, Query
from sqlalchemy import select

from engine.defects.kind_names import kind_key
from pipeline.storage.labels import LabelError, add_label, labels_for
from pipeline.storage.models import ModelVersion, Verdict
from pipeline.storage.repository import activate_model_version
from pipeline.storage.tokens import Principal
from workers.api.auth import SessionDep, current_principal, require
from workers.api.errors import ApiError
from workers.api.openapi import errors
from workers.api.params import VerdictId
from workers.api.schemas import LabelIn, LabelOut, ModelVersionOut
from workers.api.values import Text

router = APIRouter(prefix="/api/v1")


@router.get("/me", tags=["auth"], summary="The calling token's name and role")
def me(principal: Annotated[Principal, Depends(current_principal)]) -> dict[str, str]:
    return {"name": principal.name, "role": principal.role}


@router.get("/verdicts/{verdict_id}/labels", response_model=list[LabelOut], tags=["labels"],
            dependencies=[Depends(require("viewer"))], responses=errors(404))
def get_labels(verdict_id: VerdictId, session: SessionDep) -> list[LabelOut]:
    if session.get(Verdict, verdict_id) is None:
        raise ApiError(404, f"verdict {verdict_id} not found")
    return [LabelOut.model_validate(x, from_attributes=True)
            for x in labels_for(session, verdict_id)]


@router.post("/verdicts/{verdict_id}/labels", response_model=LabelOut, status_code=201,
             tags=["labels"], summary="Confirm, reject or correct a verdict",
             responses=errors(404))
def post_label(verdict_id: VerdictId, body: LabelIn,
               principal: Annotated[Principal, Depends(require("operator"))],
               session: SessionDep) -> LabelOut:
    try:
        # The author is the token's name: who said it cannot be claimed in the body.
        row = add_label(session, verdict_id=verdict_id, label=body.label,
                        author=principal.name, region_id=body.region_id,
                        description=body.description,
                        mask_rle=body.mask_rle.model_dump(mode="json") if body.mask_rle else None,
                        kind_of=kind_key)
    except LookupError as exc:
        raise ApiError(404, str(exc)) from None
    except LabelError as exc:
        raise ApiError(422, str(exc)) from None
    return LabelOut.model_validate(row, from_attributes=True)


@router.get("/models", response_model=list[ModelVersionOut], tags=["models"],
            dependencies=[Depends(require("viewer"))], summary="Model versions and metrics")
def list_models(session: SessionDep,
                product: Annotated[Text | None, Query(max_length=100)] = None,
                ) -> list[ModelVersionOut]:
    stmt = select(ModelVersion).order_by(ModelVersion.product, ModelVersion.created_at.desc())
    if product:
        stmt = stmt.where(ModelVersion.product == product)
    return [ModelVersionOut.model_validate(m, from_attributes=True)
            for m in session.scalars(stmt)]


@router.post("/models/{version}/promote", response_model=ModelVersionOut, tags=["models"],
             dependencies=[Depends(require("admin"))], responses=errors(404, 409),
             summary="Make a version the active model of its product")
def promote(version: Annotated[Text, Path(max_length=100)], session: SessionDep) -> ModelVersionOut:
    row = session.scalars(select(ModelVersion).where(ModelVersion.version == version)).first()
    if row is None:
        raise ApiError(404, f"model version {version!r} not found")
    if row.status == "rejected":
        raise ApiError(409, f"model version {version!r} was rejected by evaluation")
    activate_model_version(session, version)
    return ModelVersionOut.model_validate(row, from_attributes=True)
