"""Alarms: viewers list them, operators acknowledge them, admins configure the rules."""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Depends, Path, Query, Request
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from pipeline.storage.alarms import AlarmStateError, acknowledge, list_alarms
from pipeline.storage.models import Alarm, AlarmRule, Camera, ProductionLine
from pipeline.storage.tokens import Principal
from workers.api.auth import SessionDep, require
from workers.api.errors import ApiError
from workers.api.openapi import errors
from workers.api.schemas import AlarmOut, AlarmRuleIn, AlarmRuleOut, AlarmRulePatch
from workers.api.values import MAX_DB_ID

router = APIRouter(prefix="/api/v1", tags=["alarms"])
AlarmId = Annotated[int, Path(ge=1, le=MAX_DB_ID, description="Alarm id.")]
RuleId = Annotated[int, Path(ge=1, le=MAX_DB_ID, description="Alarm rule id.")]


def alarm_out(alarm: Alarm) -> AlarmOut:
    rule = alarm.rule
    return AlarmOut(
        id=alarm.id, rule_id=rule.id, rule=rule.name, scope=rule.scope, target=rule.target,
        max_rate=rule.max_rate, window_minutes=rule.window_minutes,
        **{k: getattr(alarm, k) for k in (
            "raised_at", "window_start", "window_end", "total", "anomalous", "rate",
            "cleared_at", "acknowledged_at", "acknowledged_by", "published_at")})


@router.get("/alarms", response_model=list[AlarmOut], dependencies=[Depends(require("viewer"))],
            summary="Alarms, newest first (active: open and not acknowledged)")
def get_alarms(session: SessionDep,
               state: Literal["active", "open", "all"] = "active",
               limit: Annotated[int, Query(ge=1, le=500)] = 100) -> list[AlarmOut]:
    return [alarm_out(a) for a in list_alarms(session, state=state, limit=limit)]


@router.post("/alarms/{alarm_id}/acknowledge", response_model=AlarmOut,
             responses=errors(404, 409),
             summary="Acknowledge an alarm (who and when are stored)")
def post_acknowledge(alarm_id: AlarmId, request: Request,
                     principal: Annotated[Principal, Depends(require("operator"))],
                     session: SessionDep) -> AlarmOut:
    try:
        alarm = acknowledge(session, alarm_id, who=principal.name,
                            now=request.app.state.clock())
    except LookupError as exc:
        raise ApiError(404, str(exc)) from None
    except AlarmStateError as exc:
        raise ApiError(409, str(exc)) from None
    return alarm_out(alarm)


@router.get("/alarm-rules", response_model=list[AlarmRuleOut],
            dependencies=[Depends(require("viewer"))], summary="Alarm rules")
def get_rules(session: SessionDep) -> list[AlarmRuleOut]:
    return [AlarmRuleOut.model_validate(r, from_attributes=True)
            for r in session.scalars(select(AlarmRule).order_by(AlarmRule.id))]


def check_target(session: Session, scope: str, target: str) -> None:
    """A rule for a line or camera no frame has come from would never fire (a typo:
    cam-01 for cam-1): refused, naming the ones that exist."""
    table = ProductionLine if scope == "line" else Camera
    if session.get(table, target) is not None:
        return
    known = list(session.scalars(select(table.id).order_by(table.id).limit(21)))
    listed = ", ".join(known[:20]) + (", ..." if len(known) > 20 else "") or "none yet"
    raise ApiError(422, f"no {scope} {target!r} has sent a frame, so the rule would never "
                        f"fire; known {scope}s: {listed}")


@router.post("/alarm-rules", response_model=AlarmRuleOut, status_code=201,
             responses=errors(409),
             description="The line or camera must have sent frames (else 422, naming the "
                         "known ones): a rule for an unknown one would never fire.",
             summary="Add a defect-rate alarm rule (admin)")
def post_rule(body: AlarmRuleIn, request: Request,
              principal: Annotated[Principal, Depends(require("admin"))],
              session: SessionDep) -> AlarmRuleOut:
    check_target(session, body.scope, body.target)
    rule = AlarmRule(**body.model_dump(), created_by=principal.name,
                     created_at=request.app.state.clock())
    try:
        with session.begin_nested():
            session.add(rule)
            session.flush()
    except IntegrityError:
        raise ApiError(409, f"an alarm rule named {body.name!r} exists") from None
    return AlarmRuleOut.model_validate(rule, from_attributes=True)


@router.patch("/alarm-rules/{rule_id}", response_model=AlarmRuleOut,
              dependencies=[Depends(require("admin"))], responses=errors(404),
              summary="Change a rule's bound, window or minimum, or switch it off (admin)")
def patch_rule(rule_id: RuleId, body: AlarmRulePatch, session: SessionDep) -> AlarmRuleOut:
    rule = session.get(AlarmRule, rule_id)
    if rule is None:
        raise ApiError(404, f"alarm rule {rule_id} not found")
    for key, value in body.model_dump(exclude_none=True).items():
        setattr(rule, key, value)
    session.flush()
    return AlarmRuleOut.model_validate(rule, from_attributes=True)
