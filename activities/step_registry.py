"""The activity side of the step-type registry (``domain.step_types``).

The domain entry names its activity (``StepType.activity``, the Temporal activity name) but
cannot import it: the domain imports nothing of ours. Here each name is resolved to the activity
method, which the workflow calls by typed reference (``execute_activity_method``) and the worker
binds and registers. ``check_registry`` runs at import: a registry entry without its activity, an
activity whose name differs from the entry's, or an activity left here for no entry stops the
worker (and the tests) from starting instead of failing runs.

A new step type: its ``StepType`` in ``domain.step_types`` and its activity method in
``STEP_ACTIVITIES`` (a method of a step-activity class taking ``(settings, sessions)``).
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from sqlalchemy.orm import Session, sessionmaker
from temporalio import activity

from activities.ai_steps import AiStepActivities
from activities.container_steps import ContainerStepActivities
from activities.git_steps import GitStepActivities
from activities.steps import StepActivities
from domain.step_types import STEP_TYPE_REGISTRY, StepRunner
from settings import Settings

# Step type -> its activity method (unbound: the workflow's typed reference).
STEP_ACTIVITIES: dict[str, Callable[..., Any]] = {
    "run_tests": StepActivities.run_tests,
    "checkout": StepActivities.checkout,
    "notify": StepActivities.notify,
    "custom": StepActivities.custom,
    "claude_execute": AiStepActivities.claude_execute,
    "create_branch": GitStepActivities.create_branch,
    "create_pr": GitStepActivities.create_pr,
    "post_comment": GitStepActivities.post_comment,
    "upload_artifact": ContainerStepActivities.upload_artifact,
    "download_artifact": ContainerStepActivities.download_artifact,
}

# Activities the step runners use besides the per-type ones: a container step's instance and
# result, and removing a run's workspace. Served wherever steps run (runner-label queues too).
STEP_SUPPORT_ACTIVITIES: tuple[Callable[..., Any], ...] = (
    ContainerStepActivities.prepare,
    ContainerStepActivities.collect,
    StepActivities.remove_workspace,
)


def activity_name(method: Callable[..., Any]) -> str:
    """The Temporal activity name of an ``@activity.defn`` method."""
    defn = activity._Definition.from_callable(method)
    if defn is None or defn.name is None:
        raise TypeError(f"{method.__qualname__} is not an @activity.defn method")
    return defn.name


def registry_problems(registry: Mapping[str, Any] | None = None,
                      activities: Mapping[str, Callable[..., Any]] | None = None) -> list[str]:
    """Where the domain registry and ``STEP_ACTIVITIES`` disagree, as sentences (none: they agree)."""
    registry = STEP_TYPE_REGISTRY if registry is None else registry
    activities = STEP_ACTIVITIES if activities is None else activities
    problems = []
    for name, entry in registry.items():
        method = activities.get(name)
        wants_activity = entry.available and entry.runner == StepRunner.ACTIVITY
        if wants_activity and method is None:
            problems.append(f"step type {name!r} runs activity {entry.activity!r}, which STEP_ACTIVITIES lacks")
        elif method is not None and not wants_activity:
            problems.append(f"STEP_ACTIVITIES has an activity for {name!r}, which runs as "
                            f"{entry.runner.value}{'' if entry.available else ' (not available)'}")
        elif method is not None and activity_name(method) != entry.activity:
            problems.append(f"step type {name!r} names activity {entry.activity!r}, but its method "
                            f"{method.__qualname__} is {activity_name(method)!r}")
    problems += [f"STEP_ACTIVITIES has {name!r}, which is not a step type" for name in activities
                 if name not in registry]
    return problems


def check_registry() -> None:
    problems = registry_problems()
    if problems:
        raise RuntimeError("the step-type registry and its activities disagree: " + "; ".join(problems))


def step_activity(type_name: str) -> Callable[..., Any] | None:
    """The activity method the workflow calls for a step of ``type_name`` (None: not an activity)."""
    return STEP_ACTIVITIES.get(type_name)


def _owner(method: Callable[..., Any]) -> type:
    """The class that defines ``method`` (an activity method is referenced unbound here)."""
    owner = getattr(sys.modules[method.__module__], method.__qualname__.split(".")[0])
    if not isinstance(owner, type):
        raise TypeError(f"{method.__qualname__} is not a method of a step-activity class")
    return owner


def step_activity_methods(settings: Settings, sessions: sessionmaker[Session],
                          instances: Iterable[object] = ()) -> list[Callable[..., Any]]:
    """Every step activity bound for a worker: one instance per class (``instances`` reused where
    the worker has one; a class without one is made with ``(settings, sessions)``)."""
    by_class: dict[type, object] = {type(instance): instance for instance in instances}
    bound = []
    for method in (*STEP_ACTIVITIES.values(), *STEP_SUPPORT_ACTIVITIES):
        owner = _owner(method)
        if owner not in by_class:
            by_class[owner] = owner(settings, sessions)
        bound.append(getattr(by_class[owner], method.__name__))
    return bound


check_registry()
