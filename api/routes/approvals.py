"""Approval decisions (the seed's ApprovalTokensController): by the token of a recipient's
link, or by a signed-in recipient. Both are one Temporal Update on the run's workflow, whose
validator refuses a bad decision before anything is recorded; the caller gets the outcome."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Literal

from fastapi import APIRouter, Body, Path
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import select
from temporalio.client import WorkflowUpdateFailedError
from temporalio.exceptions import ApplicationError
from temporalio.service import RPCError, RPCStatusCode

from activities.approvals import hash_approval_token
from adapters.temporal import TemporalGateway
from api import errors
from api.deps import SessionDep, TemporalDep, WriterCaller
from db.models import StepApprovalToken, User
from domain.errors import Conflict, DomainError, Forbidden, Gone, Invalid, NotFound
from domain.statuses import ApprovalDecision, ApprovalOutcome
from services import runs as services
from workflows.pipeline_run import ApprovalDecisionRequest, PipelineRunWorkflow

router = APIRouter(tags=["approvals"])


class DecisionRefused(Invalid):
    """The validator's 422 refusals, whose ``detail`` has always been its one sentence (not a
    list of field problems like other ``Invalid``s)."""

    def __init__(self, message: str) -> None:
        DomainError.__init__(self, message)


# What each refusal of the workflow's validator is (and so answers over HTTP).
REFUSALS: dict[str, type[DomainError]] = {
    "ApprovalTokenUsed": Gone,
    "ApprovalTokenExpired": Gone,
    "ApprovalTokenInvalid": NotFound,
    "ApprovalNotRecipient": Forbidden,
    "ApprovalSelfApproval": Forbidden,
    "ApprovalCommentRequired": DecisionRefused,
    "ApprovalInvalidDecision": DecisionRefused,
    "ApprovalNotWaiting": Conflict,
    "ApprovalAlreadyDecided": Conflict,
}


class DecisionBody(BaseModel):
    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [{"comment": "looks good"}]})

    comment: str = Field("", max_length=5000)


class DecisionPublic(BaseModel):
    run_id: int
    step_id: str
    decision: ApprovalDecision
    outcome: ApprovalOutcome = Field(
        description="the gate's state after this decision: pending while more approvals are needed")
    approvals: int
    required: int
    decided_by: str


def _decide(temporal: TemporalGateway, run_id: int, request: ApprovalDecisionRequest) -> DecisionPublic:
    try:
        result = temporal.call(temporal.update, f"run-{run_id}", PipelineRunWorkflow.decide_approval, request)
    except WorkflowUpdateFailedError as exc:
        cause = exc.cause
        if isinstance(cause, ApplicationError) and cause.type in REFUSALS:
            raise REFUSALS[cause.type](cause.message) from None
        raise
    except RPCError as exc:
        if exc.status in (RPCStatusCode.NOT_FOUND, RPCStatusCode.FAILED_PRECONDITION):
            raise Conflict("this run is no longer running") from None
        raise
    return DecisionPublic(run_id=run_id, step_id=request.step_id,
                          decision="approved" if request.decision == "approve" else "rejected",
                          outcome=result.outcome, approvals=result.approvals, required=result.required,
                          decided_by=result.decided_by)


@router.post("/approval_tokens/{token}/{decision}", response_model=DecisionPublic, responses={
    403: {"description": "the token's recipient may not decide (e.g. the run's own trigger)"},
    410: {"description": "the link was already used, or the gate has expired"},
    422: {"description": "a comment is required, or the decision is not valid here"}})
def decide_approval_by_token(
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
            raise Gone("this approval link has already been used")
        if row.expires_at <= datetime.now(UTC):
            raise Gone("this approval request has expired")
        return row

    row = find()
    try:
        return _decide(temporal, row.run_id, ApprovalDecisionRequest(
            step_id=row.step_id, decision=decision, comment=(body or DecisionBody()).comment,
            token_hash=token_hash, decided_by=row.recipient))
    except Conflict:
        # The run moved on while we asked; if that was this very token, say so (410).
        session.expire_all()
        find()
        raise


@router.post("/pipeline_runs/{run_id}/steps/{step_id}/{decision}", response_model=DecisionPublic, responses={
    403: {"description": "the caller is not one of the gate's recipients, or approves their own run"}})
def decide_approval_as_user(
                            run_id: int,
                            step_id: str,
                            decision: Literal["approve", "reject"],
                            session: SessionDep,
                            caller: WriterCaller,
                            temporal: TemporalDep,
                            body: Annotated[DecisionBody | None, Body()] = None,
                            ) -> DecisionPublic:
    """Decide as the signed-in user, who must be one of the gate's recipients."""
    services.get_run(session, caller.account_id, run_id)  # 404 for a run of another account
    email = session.scalar(select(User.email).where(User.id == caller.user_id)) or ""
    return _decide(temporal, run_id, ApprovalDecisionRequest(
        step_id=step_id, decision=decision, comment=(body or DecisionBody()).comment, decided_by=email,
        user_id=caller.user_id))
