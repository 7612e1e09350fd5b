"""The pipeline document: the YAML/JSON users write, validated completely on save.

Validation names the field that is wrong (``steps[1].with.env.R``) and why: unknown step
type, duplicate step id, expression syntax, a reference to a step that does not exist or
comes later, a `${{ }}` inside shell text, bad cron, limits. ``to_document`` is the inverse
of storing, so export then import is lossless.
"""

from __future__ import annotations

import re
import zoneinfo
from dataclasses import dataclass
from typing import Annotated, Any, Literal, Protocol

import yaml
from croniter import croniter
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic_core import PydanticCustomError

from domain import expressions
from domain.access import ROLES
from domain.safe_documents import load_yaml
from domain.step_types import (
    StepSpec,
    container_type_names,
    defaults_to_container,
    step_type,
    step_type_names,
)
from domain.webhooks.matching import glob_regex

PIPELINE_TYPES = ("review", "implement", "security", "deploy", "custom")
EXPRESSION_CONTEXTS = {"inputs", "steps", "trigger", "run", "env", "secrets", "pipeline"}
STEP_PROPERTIES = {"outputs", "status", "outcome", "conclusion"}
# Fields whose text becomes shell source: an expression there would be an injection.
SHELL_TEXT_FIELDS = ("command", "script", "shell")
IDENT = r"^[A-Za-z_][A-Za-z0-9_-]{0,99}$"
ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
SHELL_EXECUTOR_OFF = (
    "the shell executor is off on this installation: `run_tests` and `custom` steps run in containers "
    "(`executor: docker`, the default here). An operator can turn shell steps on with DEVOPS_SHELL_EXECUTOR=true "
    "(or DEVOPS_ENVIRONMENT=development); they then run on the worker's machine, so only for trusted "
    "single-tenant installs")


class InstallationSettings(Protocol):
    """The three settings validation reads (``settings.Settings`` has them; the domain does not
    import it, the caller hands it in)."""

    @property
    def shell_executor_enabled(self) -> bool: ...

    @property
    def default_step_image(self) -> str: ...

    @property
    def private_targets_allowed(self) -> bool: ...


@dataclass(frozen=True)
class ExecutorRules:
    """What the installation allows, passed in by the caller so validation stays pure:
    ``shell_allowed`` (settings.shell_executor_enabled) and the image a step that defaults to
    docker gets when it names none (settings.default_step_image)."""

    shell_allowed: bool = True
    default_image: str = ""
    # settings.private_targets_allowed: checkout repositories and images may be internal
    private_targets_allowed: bool = True

    @classmethod
    def from_settings(cls, settings: InstallationSettings) -> ExecutorRules:
        return cls(shell_allowed=settings.shell_executor_enabled, default_image=settings.default_step_image,
                   private_targets_allowed=settings.private_targets_allowed)


def default_executor(type_name: str, with_: dict[str, Any], shell_allowed: bool) -> str | None:
    """The executor of a step that names none: docker for `run_tests` (and a `custom` step that
    names no registered handler, i.e. runs a command) when the shell executor is off. A
    handler runs in the worker as the operator's own code. (The workflow applies the same rule,
    ``domain.step_types.defaults_to_container``, in ``workflows.pipeline_run.effective_executor``.)"""
    if shell_allowed or not defaults_to_container(type_name, with_):
        return None
    return "docker"


def validate_document(data: Any, rules: ExecutorRules) -> PipelineDocument:
    """``PipelineDocument.model_validate`` under the installation's executor rules."""
    return PipelineDocument.model_validate(data, context={"executor_rules": rules})


NUL_MESSAGE = "must not contain a NUL character (\\u0000): a process's arguments, environment and paths cannot hold one"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)


class InputDeclaration(_Strict):
    type: Literal["string", "number", "boolean", "choice"] = "string"
    description: str = ""
    required: bool = False
    default: Any = None
    options: list[str] | None = None

    @model_validator(mode="after")
    def _check(self) -> InputDeclaration:
        if self.type == "choice" and not self.options:
            raise PydanticCustomError("choice_options", "a choice input needs a non-empty `options` list")
        if self.default is not None:
            coerce_input(self, self.default)
        return self


class RetrySpec(_Strict):
    max_attempts: int = Field(1, ge=1, le=10)
    # 0.0, not 0: a given value is coerced to float, so an int default would export as `0`
    # and re-export as `0.0`, breaking the byte-identical round trip.
    delay_seconds: float = Field(0.0, ge=0, le=3600)


APPROVAL_ROLES = ROLES  # a recipient may name any role (role:approver, ...)
EMAIL = re.compile(r"^[^@\s]+@[^@\s]+$")


class ApprovalSpec(_Strict):
    timeout_minutes: int = Field(1440, ge=1, le=43200)
    recipients: list[str] = Field(default_factory=list, description="emails, or roles as role:admin")
    require_comment: bool = False
    allow_self_approval: bool = False
    min_approvals: int = Field(1, ge=1, le=20)

    @field_validator("recipients")
    @classmethod
    def _recipients(cls, value: list[str]) -> list[str]:
        for recipient in value:
            role = recipient.removeprefix("role:")
            if not (EMAIL.match(recipient) or role in APPROVAL_ROLES):
                raise PydanticCustomError(
                    "approval_recipient", "'{value}' is neither an email address nor a role (role:admin, "
                    "role:member, role:approver, role:viewer)", {"value": recipient})
        return value


class StepDocument(_Strict):
    id: Annotated[str, Field(pattern=IDENT)]
    name: str | None = Field(None, max_length=200)
    type: str
    with_: dict[str, Any] = Field(default_factory=dict, alias="with")
    if_: str | None = Field(None, alias="if")
    continue_on_error: bool = False
    timeout_minutes: int | None = Field(None, ge=1, le=360)
    retry: RetrySpec = Field(default_factory=RetrySpec)
    requires_approval: bool = False
    approval: ApprovalSpec | None = None
    # In a run from a fork's pull request this step waits for a maintainer's approval.
    requires_trust: bool = False

    @field_validator("type")
    @classmethod
    def _known_type(cls, value: str) -> str:
        if step_type(value) is None:
            raise PydanticCustomError(
                "step_type", "unknown step type '{value}'; expected one of: {known}",
                {"value": value, "known": ", ".join(step_type_names())},
            )
        return value


class BranchFilter(_Strict):
    branches: list[str] | None = None
    branches_ignore: list[str] | None = None
    tags: list[str] | None = None
    tags_ignore: list[str] | None = None
    paths: list[str] | None = None
    paths_ignore: list[str] | None = None


class PullRequestTrigger(BranchFilter):
    types: list[Literal["opened", "closed", "merged", "synchronize", "reopened"]] | None = None


class EventTypesTrigger(_Strict):
    types: list[str] | None = None
    command_prefix: str | None = None


class ScheduleTrigger(_Strict):
    cron: str
    timezone: str = "UTC"
    inputs: dict[str, Any] = Field(default_factory=dict)

    @field_validator("cron")
    @classmethod
    def _valid_cron(cls, value: str) -> str:
        if len(value.split()) != 5 or not croniter.is_valid(value):
            raise PydanticCustomError(
                "cron", "'{value}' is not a valid 5-field cron expression (minute hour day month weekday)",
                {"value": value},
            )
        return value

    @field_validator("timezone")
    @classmethod
    def _valid_timezone(cls, value: str) -> str:
        try:
            zoneinfo.ZoneInfo(value)
        except (zoneinfo.ZoneInfoNotFoundError, ValueError):
            raise PydanticCustomError("timezone", "unknown time zone '{value}'", {"value": value}) from None
        return value


class Triggers(_Strict):
    manual: dict[str, Any] | None = None
    workflow_dispatch: dict[str, Any] | None = None
    push: BranchFilter | None = None
    pull_request: PullRequestTrigger | None = None
    issue: EventTypesTrigger | None = None
    issue_comment: EventTypesTrigger | None = None
    release: EventTypesTrigger | None = None
    schedule: ScheduleTrigger | None = None


class PipelineDocument(_Strict):
    name: str = Field(min_length=1, max_length=200)
    slug: Annotated[str, Field(pattern=r"^[a-z0-9][a-z0-9-]{0,99}$")] | None = None
    description: str = Field("", max_length=5000)
    pipeline_type: Literal["review", "implement", "security", "deploy", "custom"] = "custom"
    allow_concurrent: bool = True
    timeout_minutes: int = Field(60, ge=1, le=360)
    runner_labels: list[Annotated[str, Field(min_length=1, max_length=100)]] = Field(default_factory=list)
    features: dict[str, Any] = Field(default_factory=dict)
    is_active: bool = True
    inputs: dict[Annotated[str, Field(pattern=IDENT)], InputDeclaration] = Field(default_factory=dict)
    env: dict[str, str] = Field(default_factory=dict)
    triggers: Triggers = Field(default_factory=Triggers)
    steps: list[StepDocument] = Field(min_length=1, max_length=200)

    @model_validator(mode="after")
    def _cross_checks(self, info: ValidationInfo) -> PipelineDocument:
        rules = (info.context or {}).get("executor_rules") or ExecutorRules()
        errors: list[dict[str, Any]] = []
        errors += _check_trigger_patterns(self.triggers)
        for name in self.env:
            if not ENV_NAME.match(name):
                errors.append(_err(("env", name), "env_name", f"'{name}' is not a valid environment variable name"))
        for path, text in _strings(self.env, ("env",)):
            if "\x00" in text:
                errors.append(_err(path, "nul_character", NUL_MESSAGE))
                continue
            errors += _check_expressions(path, text, set(), self.inputs)
        seen: set[str] = set()
        for index, step in enumerate(self.steps):
            base: tuple[Any, ...] = ("steps", index)
            if step.id in seen:
                errors.append(_err((*base, "id"), "duplicate_step_id", f"duplicate step id '{step.id}'"))
            if step.if_ is not None:
                errors += _check_expressions((*base, "if"), step.if_, seen, self.inputs, bare=True)
            if step.type == "code_factory_gate":
                condition = step.with_.get("condition")
                if condition is not None and not isinstance(condition, str):
                    errors.append(_err((*base, "with", "condition"), "gate_condition",
                                       "the gate's condition must be an expression string"))
                elif isinstance(condition, str) and not expressions.has_templates(condition):
                    errors += _check_expressions((*base, "with", "condition"), condition, seen, self.inputs, bare=True)
            for path, text in _strings(step.with_, (*base, "with")):
                if "\x00" in text:  # would fail the step on every retry: argv, env and paths cannot hold it
                    errors.append(_err(path, "nul_character", NUL_MESSAGE))
                    continue
                if path[-1] in SHELL_TEXT_FIELDS and len(path) == len(base) + 2 and expressions.has_templates(text):
                    errors.append(_err(path, "expression_in_shell",
                        "expressions are not allowed in shell text; pass the value through env "
                        "(env: {NAME: '${{ ... }}'}) and use \"$NAME\" in the command"))
                    continue
                errors += _check_expressions(path, text, seen, self.inputs)
            for name in _required_with(step.type):
                value = step.with_.get(name)
                if not isinstance(value, str) or not value.strip():
                    errors.append(_err((*base, "with", name), "missing_with_field",
                                       f"a {step.type} step needs `with.{name}` (text)"))
            errors += _check_executor(step, base, rules)
            errors += _check_private_targets(step, base, rules.private_targets_allowed)
            if step.type == "deploy":
                errors += _check_deploy(step, base)
            env = step.with_.get("env")
            if env is not None and not (isinstance(env, dict) and all(ENV_NAME.match(str(k)) for k in env)):
                errors.append(_err((*base, "with", "env"), "env_name",
                                   "env must map environment variable names to values"))
            seen.add(step.id)
        if errors:
            raise ValidationError.from_exception_data("PipelineDocument", errors)  # type: ignore[arg-type]
        return self

    def resolved_slug(self) -> str:
        return self.slug or slugify(self.name)


def _required_with(type_name: str) -> tuple[str, ...]:
    entry = step_type(type_name)
    return entry.required_with if entry is not None else ()


PATTERN_FIELDS = ("branches", "branches_ignore", "tags", "tags_ignore", "paths", "paths_ignore")


def _check_deploy(step: StepDocument, base: tuple[Any, ...]) -> list[dict[str, Any]]:
    """`deploy`: a cluster (id or name) and the rollout's strategy options, checked like the API
    checks them (skipped where an expression decides the value at run time)."""
    from domain.rollouts import rollout_problems

    options = step.with_
    cluster = options.get("cluster")
    if isinstance(cluster, bool) or not isinstance(cluster, (int, str)) or (isinstance(cluster, str) and not cluster.strip()):
        return [_err((*base, "with", "cluster"), "missing_with_field", "a deploy step needs `with.cluster` (id or name)")]
    parts = {name: options.get(name) for name in ("strategy", "steps", "blue_green", "rolling")}
    approve = options.get("approve_promotion")
    if approve is not None and not isinstance(approve, bool):
        return [_err((*base, "with", "approve_promotion"), "deploy_option", "approve_promotion must be true or false")]
    if approve and parts["strategy"] == "rolling":
        return [_err((*base, "with", "approve_promotion"), "deploy_option",
                     "a rolling update has no promotion to approve; use a canary or blue_green strategy, or "
                     "`requires_approval: true` for a gate before the rollout")]
    if any(expressions.has_templates(text) for _path, text in _strings(parts, ())):
        return []
    return [_err((*base, "with", *loc), "deploy_option", message)
            for loc, message in rollout_problems(parts["strategy"], parts["steps"], parts["blue_green"],
                                                 parts["rolling"])]


def _check_executor(step: StepDocument, base: tuple[Any, ...], rules: ExecutorRules) -> list[dict[str, Any]]:
    """`with.executor`: shell or docker, and docker only where a container can run. Without it a
    step runs on the shell, unless the installation has the shell executor off (see
    ``default_executor``); there `executor: shell` is refused and a docker step needs an image."""
    executor = step.with_.get("executor")
    loc = (*base, "with", "executor")
    if executor is None:
        if default_executor(step.type, step.with_, rules.shell_allowed) != "docker":
            return []
        if not step.with_.get("image") and step.with_.get("template") is None and not rules.default_image:
            return [_err((*base, "with", "image"), "missing_with_field",
                         f"the shell executor is off here, so this {step.type} step runs in a container and "
                         "needs `with.image` or `with.template` (or the operator sets DEVOPS_DEFAULT_STEP_IMAGE)")]
        return []
    if executor == "shell":
        if not rules.shell_allowed and step.type in container_type_names():
            return [_err(loc, "executor", SHELL_EXECUTOR_OFF)]
        return []
    if executor != "docker":
        return [_err(loc, "executor", f"unknown executor {executor!r}; expected shell or docker")]
    if step.type not in container_type_names():
        return [_err(loc, "executor", f"a {step.type} step cannot run in a container; "
                                      f"`executor: docker` works for: {', '.join(container_type_names())}")]
    if not step.with_.get("image") and step.with_.get("template") is None:
        return [_err((*base, "with", "image"), "missing_with_field",
                     "a step with `executor: docker` needs `with.image` or `with.template`")]
    return []


def _check_private_targets(step: StepDocument, base: tuple[Any, ...], allow_private: bool) -> list[dict[str, Any]]:
    """A literal `with.repository` (checkout) or `with.image` that the step would refuse at run
    time: a local path, file://, an internal address written out, a remote helper. No lookups here
    (names are checked when the step runs); values with expressions are left to run time."""
    from domain.network_rules import static_image_problem, static_repository_problem

    problems = []
    repository, image = step.with_.get("repository"), step.with_.get("image")
    if step.type == "checkout" and isinstance(repository, str) and repository.strip() \
            and not expressions.has_templates(repository):
        problem = static_repository_problem(repository, allow_private)
        if problem:
            problems.append(_err((*base, "with", "repository"), "private_target", problem))
    if isinstance(image, str) and not expressions.has_templates(image):
        problem = static_image_problem(image, allow_private)
        if problem:
            problems.append(_err((*base, "with", "image"), "private_target", problem))
    return problems


def _check_trigger_patterns(triggers: Triggers) -> list[dict[str, Any]]:
    """Branch, tag and path globs must compile: webhook matching skips a broken pattern, so
    without this a typo would silently stop a trigger from ever firing."""
    errors = []
    for kind in ("push", "pull_request"):
        section = getattr(triggers, kind)
        for key in PATTERN_FIELDS if section is not None else ():
            for index, pattern in enumerate(getattr(section, key, None) or []):
                loc = ("triggers", kind, key, index)
                if not pattern.removeprefix("!").strip():
                    errors.append(_err(loc, "trigger_pattern", "an empty pattern matches nothing; remove it"))
                    continue
                try:
                    glob_regex(pattern.removeprefix("!"))
                except ValueError as exc:
                    errors.append(_err(loc, "trigger_pattern", str(exc)))
    return errors


def _err(loc: tuple[Any, ...], kind: str, message: str) -> dict[str, Any]:
    return {"type": PydanticCustomError(kind, message), "loc": loc, "input": None}


def _strings(value: Any, path: tuple[Any, ...]):
    """Every string inside nested dicts/lists, with its path."""
    if isinstance(value, str):
        yield path, value
    elif isinstance(value, dict):
        for key, item in value.items():
            yield from _strings(item, (*path, key))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield from _strings(item, (*path, index))


def _check_expressions(
    path: tuple[Any, ...], text: str, earlier_steps: set[str], inputs: dict[str, InputDeclaration],
    *, bare: bool = False,
) -> list[dict[str, Any]]:
    try:
        if bare and not expressions.has_templates(text):
            sources = [text]
        else:
            sources = [inner for _start, _end, inner in expressions.find_templates(text)]
        errors = []
        for source in sources:
            for ref in expressions.references(expressions.parse(source)):
                problem = _reference_problem(ref, earlier_steps, inputs)
                if problem:
                    errors.append(_err(path, "expression_reference", problem))
        return errors
    except expressions.ExpressionError as exc:
        return [_err(path, "expression_syntax", f"invalid expression: {exc.message}")]


def _reference_problem(ref: tuple[str, ...], earlier: set[str], inputs: dict[str, InputDeclaration]) -> str | None:
    context = ref[0]
    if context not in EXPRESSION_CONTEXTS:
        return f"unknown context '{context}'; expected one of: {', '.join(sorted(EXPRESSION_CONTEXTS))}"
    if context == "inputs" and len(ref) > 1 and ref[1] not in inputs:
        return f"input '{ref[1]}' is not declared under `inputs`"
    if context == "steps" and len(ref) > 1:
        if ref[1] not in earlier:
            return f"step '{ref[1]}' does not exist or does not come before this step"
        if len(ref) > 2 and ref[2] not in STEP_PROPERTIES:
            return f"steps.{ref[1]}.{ref[2]} is not a step property; expected one of: {', '.join(sorted(STEP_PROPERTIES))}"
    return None


def coerce_input(declaration: InputDeclaration, value: Any) -> Any:
    """Check one run input against its declaration and return its typed value."""
    kind = declaration.type
    if kind == "string" and isinstance(value, str | int | float) and not isinstance(value, bool):
        return str(value)
    if kind == "number" and isinstance(value, int | float) and not isinstance(value, bool):
        return value
    if kind == "number" and isinstance(value, str):
        try:
            return int(value) if re.fullmatch(r"-?\d+", value.strip()) else float(value)
        except ValueError:
            pass
    if kind == "boolean" and isinstance(value, bool):
        return value
    if kind == "boolean" and isinstance(value, str) and value.lower() in ("true", "false"):
        return value.lower() == "true"
    if kind == "choice" and isinstance(value, str) and value in (declaration.options or []):
        return value
    if kind == "choice":
        raise PydanticCustomError("input_choice", "must be one of: {options}",
                                  {"options": ", ".join(declaration.options or [])})
    # PydanticCustomError templates substitute plain `{name}` only (no `!r`), so quote here.
    raise PydanticCustomError("input_type", "expected a {kind}, got {value}", {"kind": kind, "value": repr(value)})


def resolve_run_inputs(declared: dict[str, Any], given: dict[str, Any]) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Typed run inputs from the declaration (defaults applied) and the caller's values, plus
    FastAPI-shaped error entries naming each bad field."""
    errors: list[dict[str, Any]] = []
    resolved: dict[str, Any] = {}
    declarations = {name: InputDeclaration.model_validate(spec) for name, spec in declared.items()}
    for name in given:
        if name not in declarations:
            errors.append({"loc": ["body", "inputs", name], "type": "unknown_input",
                           "msg": f"unknown input '{name}'; declared inputs: {', '.join(declarations) or 'none'}"})
    for name, declaration in declarations.items():
        if name in given and given[name] is not None:
            try:
                resolved[name] = coerce_input(declaration, given[name])
            except PydanticCustomError as exc:
                errors.append({"loc": ["body", "inputs", name], "type": exc.type, "msg": exc.message()})
        elif declaration.default is not None:
            resolved[name] = coerce_input(declaration, declaration.default)
        elif declaration.required:
            errors.append({"loc": ["body", "inputs", name], "type": "missing", "msg": "this input is required"})
        else:
            resolved[name] = "" if declaration.type in ("string", "choice") else None
    return resolved, errors


def slugify(name: str) -> str:
    slug = re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")
    return (slug or "pipeline")[:100]


def parse_yaml(text: str) -> Any:
    """Load YAML safely and within bounds (``api.safe_parse``: alias expansion, node count, depth,
    size, NUL, 64-bit integers; those raise ``DocumentRefused``, a 413/422). A syntax error
    becomes a ValueError naming the line."""
    try:
        return load_yaml(text)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise ValueError(f"invalid YAML{where}: {exc.problem}") from None
    except yaml.YAMLError as exc:
        raise ValueError(f"invalid YAML: {exc}") from None


def dump_yaml(document: dict[str, Any]) -> str:
    return yaml.safe_dump(document, sort_keys=False, allow_unicode=True, default_flow_style=False)


def step_snapshot(step: StepDocument) -> StepSpec:
    """The document form of one step, as stored in a run's snapshot and exported."""
    data: StepSpec = {"id": step.id, "name": step.name or step.id, "type": step.type}
    if step.if_ is not None:
        data["if"] = step.if_
    data["continue_on_error"] = step.continue_on_error
    if step.timeout_minutes is not None:
        data["timeout_minutes"] = step.timeout_minutes
    data["retry"] = step.retry.model_dump()
    if step.requires_approval or step.approval is not None:
        data["requires_approval"] = step.requires_approval
        data["approval"] = (step.approval or ApprovalSpec()).model_dump()
    if step.requires_trust:
        data["requires_trust"] = True
    data["with"] = step.with_
    return data


def normalized(document: PipelineDocument) -> dict[str, Any]:
    """The full, explicit document (defaults written out), in a stable key order."""
    return {
        "name": document.name,
        "slug": document.resolved_slug(),
        "description": document.description,
        "pipeline_type": document.pipeline_type,
        "allow_concurrent": document.allow_concurrent,
        "timeout_minutes": document.timeout_minutes,
        "runner_labels": list(document.runner_labels),
        "features": document.features,
        "is_active": document.is_active,
        "inputs": {name: decl.model_dump(exclude_none=True) for name, decl in document.inputs.items()},
        "env": document.env,
        "triggers": document.triggers.model_dump(exclude_none=True),
        "steps": [step_snapshot(step) for step in document.steps],
    }
