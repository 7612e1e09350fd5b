"""How a pipeline is answered, and how a document being saved is validated: shared by the
pipelines and pipeline templates routes."""

from __future__ import annotations

from typing import Any

from pydantic import ValidationError

from api import errors
from api.schemas import PipelinePublic, PipelineStepPublic
from db.models import Pipeline
from domain.pipeline_document import ExecutorRules, PipelineDocument, validate_document
from settings import Settings


def pipeline_public(pipeline: Pipeline) -> PipelinePublic:
    return PipelinePublic(
        id=pipeline.id, name=pipeline.name, slug=pipeline.slug, description=pipeline.description,
        pipeline_type=pipeline.pipeline_type, triggers=pipeline.triggers, is_system=pipeline.is_system,
        allow_concurrent=pipeline.allow_concurrent, timeout_minutes=pipeline.timeout_minutes,
        runner_labels=list(pipeline.runner_labels), features=pipeline.features, inputs=pipeline.inputs,
        env=pipeline.env, is_active=pipeline.is_active, last_run_number=pipeline.last_run_number,
        template_version_id=pipeline.template_version_id,
        created_at=pipeline.created_at, updated_at=pipeline.updated_at,
        steps=[
            PipelineStepPublic(
                id=s.step_id, name=s.name, type=s.step_type, position=s.position, with_=s.inputs, if_=s.condition,
                continue_on_error=s.continue_on_error, timeout_minutes=s.timeout_minutes, retry=s.retry,
                requires_approval=s.requires_approval, approval=s.approval, requires_trust=s.requires_trust,
            )
            for s in pipeline.steps
        ],
    )


def validated(data: Any, prefix: tuple[Any, ...] = ("body",), *, settings: Settings) -> PipelineDocument:
    """Validate a document being saved, under the installation's executor rules."""
    if not isinstance(data, dict):
        raise errors.unprocessable([{"loc": list(prefix), "type": "document_type",
                                     "msg": "the pipeline document must be a mapping (name, steps, ...)"}])
    try:
        return validate_document(data, ExecutorRules.from_settings(settings))
    except ValidationError as exc:
        raise errors.from_validation_error(exc, prefix) from None
