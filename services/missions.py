"""AiMissionTriggerService: a run for an external mission, with its context, once per
(mission id, A2A task id)."""

from __future__ import annotations

import hashlib
import json
from typing import Any

from sqlalchemy import or_, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from db.models import Pipeline, PipelineRun
from domain import errors
from services import a2a
from services import runs as run_service
from services.audit import Actor, record
from settings import Settings

MAX_CONTEXT_BYTES = 64 * 1024


def find_pipeline(session: Session, account_id: int, pipeline_id: int | None, name: str | None) -> Pipeline:
    if pipeline_id is None and name is None:
        raise errors.field_error(["pipeline_id"], "give pipeline_id or pipeline (its name)")
    if pipeline_id is not None:
        return run_service.get_pipeline(session, account_id, pipeline_id)
    found = session.scalars(select(Pipeline).where(Pipeline.account_id == account_id,
                                                   or_(Pipeline.name == name, Pipeline.slug == name))
                            .order_by(Pipeline.id).limit(1)).first()
    if found is None:
        raise errors.not_found("pipeline")
    return found


def mission_key(mission_id: str, a2a_task_id: str | None) -> str:
    """What makes a trigger "the same" (with the account): unique on runs (migration 0013)."""
    return hashlib.sha256(f"{mission_id}\0{a2a_task_id or ''}".encode()).hexdigest()


def existing_run(session: Session, account_id: int, mission_id: str, a2a_task_id: str | None) -> PipelineRun | None:
    """The run an earlier trigger of this mission (and task) started, if any."""
    return session.scalars(select(PipelineRun).where(
        PipelineRun.account_id == account_id,
        PipelineRun.mission_key == mission_key(mission_id, a2a_task_id))).first()


def commit_or_existing(session: Session, account_id: int, mission_id: str,
                       a2a_task_id: str | None) -> PipelineRun | None:
    """Commit a new mission run; None when it is committed. A concurrent identical trigger that
    committed first makes the insert fail on the unique mission key: roll back and give its run."""
    try:
        session.commit()
    except IntegrityError:
        session.rollback()
        found = existing_run(session, account_id, mission_id, a2a_task_id)
        if found is None:  # another constraint failed: not ours to hide
            raise
        return found
    return None


def trigger(session: Session, settings: Settings, account_id: int, actor: Actor, user_id: int | None, *,
            pipeline_id: int | None, pipeline: str | None, mission_id: str, a2a_task_id: str | None,
            callback_url: str | None, callback_secret: str | None, context: dict[str, Any],
            inputs: dict[str, Any]) -> tuple[PipelineRun, bool]:
    """(run, created). Nothing is written when the input is wrong."""
    size = len(json.dumps(context, separators=(",", ":"), default=str).encode())
    if size > MAX_CONTEXT_BYTES:
        raise errors.field_error(["context"], f"is {size} bytes as JSON; at most {MAX_CONTEXT_BYTES} allowed")
    target = find_pipeline(session, account_id, pipeline_id, pipeline)
    found = existing_run(session, account_id, mission_id, a2a_task_id)
    if found is not None:
        return found, False
    if not target.is_active:
        raise errors.conflict("this pipeline is inactive; set is_active to true to run it")
    a2a.check_link(session, settings, account_id, callback_url=callback_url, callback_secret=callback_secret)
    run = run_service.create_run(
        session, target, trigger_type="mission", inputs=inputs, user_id=user_id,
        trigger_context={"mission": {"id": mission_id, "context": context}, "a2a_task_id": a2a_task_id},
    )
    a2a.link_run(run, a2a_task_id=a2a_task_id, callback_url=callback_url, callback_secret=callback_secret)
    run.mission_key = mission_key(mission_id, a2a_task_id)
    record(session, account_id, actor, "mission.triggered", target_type="pipeline_run", target_id=run.id,
           details={"mission_id": mission_id, "a2a_task_id": a2a_task_id, "pipeline_id": target.id})
    return run, True
