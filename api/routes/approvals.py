"""Approval decisions (the seed's ApprovalTokensController): by the token of a recipient's
link, or by a signed-in recipient. Both are one Temporal Update on the run's workflow, whose
validator refuses a bad decision before anything is recorded; the caller gets the outcome."""

from datetime import UTC, datetime
from typing import Annotated, Literal

from fastapi import APIRouter, Body, HTTPException, Path, status
from fastapi.concurrency import run_in_threadpool
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import select
from temporalio.client import WorkflowUpdateFailedError
from temporalio.exceptions import ApplicationError
from temporalio.service import RPCError, RPCStatusCode

from activities.approvals import hash_approval_token
from adapters.temporal import TemporalGateway
from api import errors
from api.deps import SessionDep, TemporalDep, WriterCaller
from db.models import PipelineRun, StepApprovalToken, User
from services import runs as services
from workflows.pipeline_run import ApprovalDecisionRequest, PipelineRunWorkflow

router = APIRouter(tags=["approvals"])

# What each refusal of the workflow's validator means over HTTP.
REFUSAL_STATUS = {
    "ApprovalTokenUsed": status.HTTP_410_GONE,
    "ApprovalTokenExpired": status.HTTP_410_GONE,
    "ApprovalTokenInvalid": status.HTTP_404_NOT_FOUND,
    "ApprovalNotRecipient": status.HTTP_403_FORBIDDEN,
    "ApprovalSelfApproval": status.HTTP_403_FORBIDDEN,
    "ApprovalCommentRequired": status.HTTP_422_UNPROCESSABLE_CONTENT,
    "ApprovalInvalidDecision": status.HTTP_422_UNPROCESSABLE_CONTENT,
    "ApprovalNotWaiting": status.HTTP_409_CONFLICT,
    "ApprovalAlreadyDecided": status.HTTP_409_CONFLICT,
}


class DecisionBody(BaseModel):
    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [{"comment": "looks good"}]})

    comment: str = Field("", max_length=5000)


class DecisionPublic(BaseModel):
    run_id: int
    step_id: str
    decision: Literal["approved", "rejected"]
    outcome: Literal["approved", "rejected", "pending"] = Field(
        description="the gate's state after this decision: pending while more approvals are needed")
    approvals: int
    required: int
    decided_by: str


async def _decide(temporal: TemporalGateway, run_id: int, request: ApprovalDecisionRequest) -> DecisionPublic:
    client = await temporal.client()
    try:
        result = await client.get_workflow_handle(f"run-{run_id}").execute_update(
            PipelineRunWorkflow.decide_approval, request)
    except WorkflowUpdateFailedError as exc:
        cause = exc.cause
        if isinstance(cause, ApplicationError) and cause.type in REFUSAL_STATUS:
            raise HTTPException(REFUSAL_STATUS[cause.type], cause.message) from None
        raise
    except RPCError as exc:
        if exc.status in (RPCStatusCode.NOT_FOUND, RPCStatusCode.FAILED_PRECONDITION):
            raise HTTPException(status.HTTP_409_CONFLICT, "this run is no longer running") from None
        raise
    return DecisionPublic(run_id=run_id, step_id=request.step_id,
                          decision="approved" if request.decision == "approve" else "rejected",
                          outcome=result.outcome, approvals=result.approvals, required=result.required,
                          decided_by=result.decided_by)


@router.post("/approval_tokens/{token}/{decision}", response_model=DecisionPublic)
async def decide_by_token(
    token: Annotated[str, Path(max_length=200)],
    decision: Literal["approve", "reject"],
    session: SessionDep,
    temporal: TemporalDep,
    body: Annotated[DecisionBody | None, Body()] = None,
) -> DecisionPublic:
    """Decide with the link from a recipient's notification. The token is the credential
    (no API token needed); it works once, for its recipient only, until the gate expires."""
    token_hash = hash_approval_token(token)

    def find() -> StepApprovalToken:
        row = session.scalar(select(StepApprovalToken).where(StepApprovalToken.token_hash == token_hash))
        if row is None:
            raise errors.not_found("approval token")
        if row.used_at is not None:
            raise HTTPException(status.HTTP_410_GONE, "this approval link has already been used")
        if row.expires_at <= datetime.now(UTC):
            raise HTTPException(status.HTTP_410_GONE, "this approval request has expired")
        return row

    row = await run_in_threadpool(find)
    try:
        return await _decide(temporal, row.run_id, ApprovalDecisionRequest(
            step_id=row.step_id, decision=decision, comment=(body or DecisionBody()).comment,
            token_hash=token_hash, decided_by=row.recipient))
    except HTTPException as exc:
        if exc.status_code != status.HTTP_409_CONFLICT:
            raise
        # The run moved on while we asked; if that was this very token, say so (410).
        session.expire_all()
        await run_in_threadpool(find)
        raise


@router.post("/pipeline_runs/{run_id}/steps/{step_id}/{decision}", response_model=DecisionPublic)
async def decide_as_user(
    run_id: int,
    step_id: str,
    decision: Literal["approve", "reject"],
    session: SessionDep,
    caller: WriterCaller,
    temporal: TemporalDep,
    body: Annotated[DecisionBody | None, Body()] = None,
) -> DecisionPublic:
    """Decide as the signed-in user, who must be one of the gate's recipients."""

    def who() -> tuple[PipelineRun, str]:
        run = services.get_run(session, caller.account_id, run_id)
        email = session.scalar(select(User.email).where(User.id == caller.user_id))
        return run, email or ""

    _run, email = await run_in_threadpool(who)
    return await _decide(temporal, run_id, ApprovalDecisionRequest(
        step_id=step_id, decision=decision, comment=(body or DecisionBody()).comment, decided_by=email,
        user_id=caller.user_id))
