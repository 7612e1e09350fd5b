"""Approval decisions (the seed's ApprovalTokensController): by the token of a recipient's
link, or by a signed-in recipient. Both are one Temporal Update on the run's workflow, whose
validator refuses a bad decision before anything is recorded; the caller gets the outcome, and
the audit log gets ``approval.decided``.

Reviewers also have an inbox (``GET /approvals``) and the page behind their link
(``GET /approval_tokens/{token}``, HTML, whose form posts the decision: api/approval_page.py)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Literal

from fastapi import APIRouter, Body, Path, Query, Request
from fastapi.responses import HTMLResponse
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import func, select
from sqlalchemy.orm import Session
from temporalio.client import WorkflowUpdateFailedError
from temporalio.exceptions import ApplicationError
from temporalio.service import RPCError, RPCStatusCode

from activities.approvals import hash_approval_token
from adapters.temporal import TemporalGateway
from api import approval_page, errors
from api.deps import CurrentCaller, SessionDep, TemporalDep, actor_of, request_actor
from api.pages import Page
from db.models import StepApprovalToken, User
from domain.errors import Conflict, DomainError, Forbidden, Gone, Invalid, NotFound
from domain.statuses import ApprovalDecision, ApprovalOutcome
from services import approvals as inbox_service
from services import audit
from services import runs as services
from workflows.pipeline_run import ApprovalDecisionRequest, PipelineRunWorkflow

router = APIRouter(tags=["approvals"])
# The token link's decision also takes the approval page's form (and then answers HTML).
token_router = APIRouter(tags=["approvals"], route_class=approval_page.FormDecisionRoute)


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


class ApprovalPublic(BaseModel):
    """One approval gate as the caller, one of its recipients, sees it."""

    run_id: int
    run_number: int
    pipeline_id: int
    pipeline: str
    step_id: str
    step_name: str
    attempt: int
    status: Literal["pending", "decided", "expired", "closed"] = Field(
        description="pending: waiting for you; decided: you used your link or decided; expired: the request "
                    "timed out; closed: the run no longer waits at this step")
    requested_at: datetime
    expires_at: datetime
    recipients: list[str] = Field(description="everyone who may decide this gate (you included)")
    approvals: int = Field(description="approvals so far")
    required: int = Field(description="approvals the gate needs (the step's approval.min_approvals)")
    decided_by: list[str] = Field(description="who has decided so far, in order")


def _audit(session: Session, account_id: int, actor: audit.Actor, result: DecisionPublic, comment: str) -> None:
    """``approval.decided``, after the workflow accepted the decision (a refusal records nothing)."""
    audit.record(session, account_id, actor, "approval.decided", target_type="pipeline_run",
                 target_id=result.run_id, details={"step_id": result.step_id, "decision": result.decision,
                                                   "outcome": result.outcome, "comment": comment})
    session.commit()


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


@router.get("/approvals", response_model=Page[ApprovalPublic], summary="List the approvals waiting on you", responses={
    422: {"description": "an unknown status, or limit/offset out of range"}})
def list_approvals(
                   session: SessionDep,
                   caller: CurrentCaller,
                   status: Annotated[Literal["pending", "all"], Query(
                       description="pending (default): gates waiting on you now; all: every gate you were asked "
                                   "to decide")] = "pending",
                   limit: Annotated[int, Query(ge=1, le=200)] = 50,
                   offset: Annotated[int, Query(ge=0, le=1_000_000)] = 0,
                   ) -> Page[ApprovalPublic]:
    """The approval gates addressed to the caller (by their email), newest first: run, step,
    pipeline, when it was requested, when it expires and who else may decide."""
    gates, total = inbox_service.inbox(session, caller.account_id, caller.email, status=status, limit=limit,
                                       offset=offset)
    return Page[ApprovalPublic](data=[ApprovalPublic(
        run_id=g.run_id, run_number=g.run_number, pipeline_id=g.pipeline_id, pipeline=g.pipeline,
        step_id=g.step_id, step_name=g.step_name, attempt=g.attempt, status=g.state, requested_at=g.requested_at,
        expires_at=g.expires_at, recipients=g.recipients, approvals=g.approvals, required=g.required,
        decided_by=g.decided_by) for g in gates], count=total)


_HTML = {"text/html": {"schema": {"type": "string"}}}


# A page for people; public: the token in the path is the credential.
@router.get("/approval_tokens/{token}", response_class=HTMLResponse, summary="Open an approval link's page", responses={
    200: {"description": "the approval page: what is asked, who else may decide, until when, and its form"},
    404: {"description": "an HTML page: the link is not valid", "content": _HTML},
    410: {"description": "an HTML page: the link was used, the request expired or the run no longer waits",
          "content": _HTML}})
def show_approval_page(
                       request: Request,
                       token: Annotated[str, Path(max_length=200)],
                       session: SessionDep,
                       decision: Annotated[Literal["approve", "reject"] | None, Query()] = None,
                       ) -> HTMLResponse:
    """The page behind a notification's link: what is asked, who else may decide, until when,
    and a form (comment, Approve, Reject) posting to ``/approval_tokens/{token}/{decision}``.
    404 for an unknown link, 410 for a used or expired one or a gate no longer waiting."""
    found = inbox_service.gate_of_token(session, hash_approval_token(token))
    if found is None:
        return approval_page.problem_page(404, "This approval link is not valid: check that it was copied whole.")
    gate, recipient = found
    reasons = {"decided": "This approval link has already been used." if gate.used_at else
                          f"{recipient} has already decided this approval.",
               "expired": f"This approval request expired at {gate.expires_at:%Y-%m-%d %H:%M} UTC.",
               "closed": f"Run #{gate.run_number} no longer waits for this approval (the step is "
                         f"{gate.step_status or 'gone'})."}
    if gate.state in reasons:
        return approval_page.problem_page(410, reasons[gate.state])
    return approval_page.approval_page(request, token, gate, recipient, require_comment=gate.require_comment,
                                       chosen=decision)


@token_router.post("/approval_tokens/{token}/{decision}", response_model=DecisionPublic, responses={
    403: {"description": "the token's recipient may not decide (e.g. the run's own trigger)"},
    410: {"description": "the link was already used, or the gate has expired"},
    413: {"description": "a form body larger than 64 KiB"},
    422: {"description": "a comment is required, or the decision is not valid here"}},
    openapi_extra={"requestBody": {"content": {approval_page.FORM_TYPE: {
        "schema": {"$ref": "#/components/schemas/DecisionBody"}}}}})
def decide_approval_by_token(
                             request: Request,
                             token: Annotated[str, Path(max_length=200)],
                             decision: Literal["approve", "reject"],
                             session: SessionDep,
                             temporal: TemporalDep,
                             body: Annotated[DecisionBody | None, Body()] = None,
                             ) -> DecisionPublic:
    """Decide with the link from a recipient's notification. The token is the credential
    (no API token needed); it works once, for its recipient only, until the gate expires.
    Sent as the approval page's form (``application/x-www-form-urlencoded``, field ``comment``)
    the answer is an HTML page with the outcome, or the refusal in words with its status."""
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
    comment = (body or DecisionBody()).comment
    try:
        result = _decide(temporal, row.run_id, ApprovalDecisionRequest(
            step_id=row.step_id, decision=decision, comment=comment, token_hash=token_hash,
            decided_by=row.recipient))
    except Conflict:
        # The run moved on while we asked; if that was this very token, say so (410).
        session.expire_all()
        find()
        raise
    user_id = session.scalar(select(User.id).where(User.account_id == row.account_id,
                                                   func.lower(User.email) == row.recipient.lower()))
    _audit(session, row.account_id, request_actor(request, row.recipient, user_id=user_id), result, comment)
    return result


@router.post("/pipeline_runs/{run_id}/steps/{step_id}/{decision}", response_model=DecisionPublic, responses={
    403: {"description": "the caller is not one of the gate's recipients, approves their own run, or lacks "
                         "approvals:decide (viewers)"}})
def decide_approval_as_user(
                            request: Request,
                            run_id: int,
                            step_id: str,
                            decision: Literal["approve", "reject"],
                            session: SessionDep,
                            caller: CurrentCaller,
                            temporal: TemporalDep,
                            body: Annotated[DecisionBody | None, Body()] = None,
                            ) -> DecisionPublic:
    """Decide as the signed-in user, who must be one of the gate's recipients (any role whose
    token carries ``approvals:decide``: admin, member, approver)."""
    services.get_run(session, caller.account_id, run_id)  # 404 for a run of another account
    comment = (body or DecisionBody()).comment
    result = _decide(temporal, run_id, ApprovalDecisionRequest(
        step_id=step_id, decision=decision, comment=comment, decided_by=caller.email, user_id=caller.user_id))
    _audit(session, caller.account_id, actor_of(request, caller), result, comment)
    return result


router.include_router(token_router)
