"""Missions (the seed's AiMissionTriggerService): an external agent starts a run for its mission."""

from __future__ import annotations

from fastapi import APIRouter, Response, status

from api.deps import ActorDep, SessionDep, SettingsDep, TemporalDep, WriterCaller
from api.mission_schemas import MissionTrigger
from api.run_views import run_public, start_and_describe
from api.schemas import PipelineRunPublic
from services import missions

router = APIRouter(prefix="/missions", tags=["missions"])


@router.post("/trigger", response_model=PipelineRunPublic, status_code=status.HTTP_201_CREATED,
             summary="Start a run for an external mission",
             responses={200: {"model": PipelineRunPublic,
                              "description": "this mission (and A2A task) already has a run: that run"},
                        404: {"description": "no such pipeline in this account"},
                        409: {"description": "the pipeline is inactive"},
                        422: {"description": "bad input: the field is named (context over 64 KB, callback_url, "
                                             "callback_secret, inputs)"}})
def trigger_mission(body: MissionTrigger, session: SessionDep, caller: WriterCaller, temporal: TemporalDep,
                    settings: SettingsDep, actor: ActorDep, response: Response) -> PipelineRunPublic:
    """Start a run (trigger type ``mission``) of ``pipeline_id`` or the pipeline named ``pipeline``;
    steps read the mission's context as ``${{ trigger.mission.context.<key> }}``. The same
    ``mission_id`` + ``a2a_task_id`` again answers the existing run with 200, never a second run."""
    run, created = missions.trigger(
        session, settings, caller.account_id, actor, caller.user_id, pipeline_id=body.pipeline_id,
        pipeline=body.pipeline, mission_id=body.mission_id, a2a_task_id=body.a2a_task_id,
        callback_url=body.callback_url, callback_secret=body.callback_secret, context=body.context,
        inputs=body.inputs)
    if created:
        # A concurrent identical trigger may have committed its run first: then that one is the answer.
        earlier = missions.commit_or_existing(session, caller.account_id, body.mission_id, body.a2a_task_id)
        if earlier is None:
            return start_and_describe(session, temporal, settings, run)
        run = earlier
    response.status_code = status.HTTP_200_OK
    return run_public(run, temporal)
