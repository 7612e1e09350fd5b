"""The ``claude_execute`` step: render a prompt, call the model, record the tokens.

The workflow has already resolved ``${{ }}`` in ``with`` (step outputs and inputs arrive as data,
secrets as placeholders the shared step plumbing substitutes: only the secrets the step names are
loaded, and every output and log line is masked for them). The prompt is then rendered in the
Jinja2 sandbox with ``with.variables`` as values (never parsed as templates themselves), checked
against the AI config's token budgets, and sent with the official SDK (``adapters.model_clients``)
while a background heartbeat keeps Temporal informed.

Failures: 429/5xx/no connection are retried by Temporal (the step activity's retry policy), the
next try waiting what ``retry-after`` asked, up to ``MAX_TRIES`` tries; other refusals (400, 401,
403, 404 such as an unknown model) fail the step at once with the provider's message. Every call
records an ``AiUsage`` row, failed ones with their error. The model's answer is data: it becomes
the ``response`` output, which a later step reads through ``env:``, never through shell text.
"""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy.orm import Session, sessionmaker
from temporalio import activity
from temporalio.exceptions import ApplicationError

from activities.step_contract import HEARTBEAT_SECONDS, StepInput, StepResult, step_failed
from activities.steps import StepActivities, refuse_private_target
from adapters.model_clients import ModelCall, ModelCallFailed, ModelReply, call_model
from db.crypto import InvalidToken, SecretBox
from domain.ai import ExecuteRequest, budget_problem, cost_estimate, parse_execute_request
from domain.errors import Invalid, NotFound
from domain.masking import Masker
from services import ai_configs, ai_usage, prompts
from settings import Settings

MAX_TRIES = 4
MAX_RETRY_DELAY_SECONDS = 60.0


@dataclass(frozen=True)
class _Prepared:
    config_id: int
    config_name: str
    call: ModelCall
    run_budget: int | None
    month_budget: int | None
    input_price: float | None
    output_price: float | None


def _problems_text(exc: Invalid) -> str:
    return "; ".join(f"{'.'.join(str(part) for part in p.get('loc', []))}: {p.get('msg')}" for p in exc.errors())


class AiStepActivities:
    """Model-calling steps. Secrets and step logs go through the shared step plumbing."""

    def __init__(self, settings: Settings, session_factory: sessionmaker[Session]) -> None:
        self._settings = settings
        self._sessions = session_factory
        self._steps = StepActivities(settings, session_factory)
        self._box = SecretBox(settings.secret_key, settings.old_secret_keys)

    def _prepare_call(self, inp: StepInput, request: ExecuteRequest) -> _Prepared:
        """The config, the rendered prompt and the budget check before the call (one session)."""
        with self._sessions() as session:
            try:
                config = ai_configs.config_for_step(session, inp.account_id, request.ai_config)
                if request.prompt_template is not None:
                    template = prompts.template_by_name(session, inp.account_id, request.prompt_template)
                    version = prompts.get_version(session, template, request.template_version)
                    rendered = prompts.render_version(version, request.variables, field=("with",),
                                                      max_bytes=self._settings.ai_prompt_max_bytes)
                    prompt, system = rendered.rendered, rendered.system
                else:
                    assert request.prompt is not None
                    prompt, _ = prompts.render_text(request.prompt, None, request.variables, {}, field=("with",),
                                                    max_bytes=self._settings.ai_prompt_max_bytes)
                    system = None
            except NotFound as exc:
                raise step_failed(str(exc.detail)) from None
            except Invalid as exc:
                raise step_failed(f"the prompt could not be rendered: {_problems_text(exc)}") from None
            if request.system is not None:
                system = request.system
            now = datetime.now(UTC)
            problem = budget_problem(config.name, run_used=ai_usage.tokens_in_run(session, config.id, inp.run_id),
                                     run_budget=config.run_token_budget,
                                     month_used=ai_usage.tokens_this_month(session, config.id, now),
                                     month_budget=config.monthly_token_budget, before_call=True)
            if problem:
                raise step_failed(problem)
            try:
                key = self._box.decrypt(config.encrypted_api_key) if config.encrypted_api_key else None
            except InvalidToken:
                raise step_failed(f"the api key of ai config '{config.name}' cannot be decrypted with the "
                                  "configured keys") from None
            if key is None and config.provider == "anthropic":
                raise step_failed(f"ai config '{config.name}' has no api_key (PATCH /ai_configs/{config.id})")
            call = ModelCall(provider=config.provider, model=config.model, api_key=key, base_url=config.base_url,
                             prompt=prompt, system=system, max_tokens=request.max_tokens or config.max_tokens,
                             temperature=request.temperature if request.temperature is not None
                             else config.temperature,
                             timeout_seconds=self._settings.ai_request_timeout_seconds, stream=request.stream,
                             tools=[{"name": t.name, "description": t.description, "input_schema": t.input_schema}
                                    for t in request.tools])
            return _Prepared(config.id, config.name, call, config.run_token_budget, config.monthly_token_budget,
                             config.input_cost_per_mtok, config.output_cost_per_mtok)

    def _record(self, inp: StepInput, prepared: _Prepared, reply: ModelReply | None, error: str | None,
                latency_ms: int) -> str | None:
        """One usage row; for a reply, the budget the call's tokens went past (None: within)."""
        tokens_in, tokens_out = (reply.input_tokens, reply.output_tokens) if reply else (0, 0)
        with self._sessions.begin() as session:
            ai_usage.record(session, account_id=inp.account_id, ai_config_id=prepared.config_id, run_id=inp.run_id,
                            step_id=inp.step_id, attempt=inp.attempt, provider=prepared.call.provider,
                            model=reply.model if reply else prepared.call.model, input_tokens=tokens_in,
                            output_tokens=tokens_out, latency_ms=latency_ms,
                            cost_estimate=cost_estimate(tokens_in, tokens_out, prepared.input_price,
                                                        prepared.output_price),
                            stop_reason=reply.stop_reason if reply else None, error=error)
            session.flush()
            if reply is None:
                return None
            return budget_problem(
                prepared.config_name, run_used=ai_usage.tokens_in_run(session, prepared.config_id, inp.run_id),
                run_budget=prepared.run_budget,
                month_used=ai_usage.tokens_this_month(session, prepared.config_id, datetime.now(UTC)),
                month_budget=prepared.month_budget, before_call=False)

    async def _log(self, inp: StepInput, masker: Masker, *lines: str) -> None:
        log = await asyncio.to_thread(self._steps._log_writer, inp, masker)
        for line in lines:
            log.line(line)
        await log.aflush()

    @activity.defn(name="step_claude_execute")
    async def claude_execute(self, inp: StepInput) -> StepResult:
        """Render ``with.prompt`` (or the ``with.prompt_template``) with ``with.variables``, call the
        AI config's model and return ``response``, ``usage``, ``cost_estimate``, ``latency_ms``,
        ``model``, ``stop_reason`` and ``tool_calls`` (asked for, never executed)."""
        params, _env, masker = await asyncio.to_thread(self._steps._prepare, inp)
        try:
            request = parse_execute_request(params)
        except ValueError as exc:
            raise step_failed(masker.mask(str(exc))) from None
        prepared = await asyncio.to_thread(self._prepare_call, inp, request)
        if prepared.call.base_url and not self._settings.private_targets_allowed:
            await refuse_private_target(prepared.call.base_url, what="the model base URL's")
        beating = asyncio.create_task(_heartbeat_forever())
        try:
            reply = await call_model(prepared.call, on_event=activity.heartbeat)
        except ModelCallFailed as exc:
            message = masker.mask(exc.message)
            await asyncio.to_thread(self._record, inp, prepared, None, message, exc.latency_ms)
            raise self._failure(exc, message) from None
        finally:
            beating.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await beating
        over_budget = await asyncio.to_thread(self._record, inp, prepared, reply, None, reply.latency_ms)
        outputs: dict[str, Any] = masker.mask_value({
            "response": reply.text,
            "usage": {"input_tokens": reply.input_tokens, "output_tokens": reply.output_tokens,
                      "total_tokens": reply.input_tokens + reply.output_tokens},
            "cost_estimate": cost_estimate(reply.input_tokens, reply.output_tokens, prepared.input_price,
                                           prepared.output_price),
            "latency_ms": reply.latency_ms, "model": reply.model, "stop_reason": reply.stop_reason,
            "tool_calls": reply.tool_calls,
        })
        await self._log(inp, masker, f"[devops] ai config '{prepared.config_name}' ({prepared.call.provider}, model "
                        f"{reply.model}): {reply.input_tokens} input + {reply.output_tokens} output tokens, "
                        f"{reply.latency_ms} ms, stop reason {reply.stop_reason}"
                        + (f", {len(reply.tool_calls)} tool call(s) requested" if reply.tool_calls else ""))
        if over_budget:
            raise step_failed(over_budget, outputs)
        return StepResult(outputs=outputs)

    def _failure(self, exc: ModelCallFailed, message: str) -> ApplicationError:
        tries = activity.info().attempt
        if exc.retryable and tries < MAX_TRIES:
            delay = None if exc.retry_after is None else timedelta(seconds=min(exc.retry_after,
                                                                               MAX_RETRY_DELAY_SECONDS))
            return ApplicationError(f"the model API failed (try {tries} of {MAX_TRIES}): {message}",
                                    type="ModelApiUnavailable", next_retry_delay=delay)
        if exc.retryable:
            return step_failed(f"the model API failed {tries} times; last: {message}")
        return step_failed(f"the model API refused the call: {message}")


async def _heartbeat_forever() -> None:
    while True:
        activity.heartbeat()
        await asyncio.sleep(HEARTBEAT_SECONDS)
