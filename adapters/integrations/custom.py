"""The ``custom`` executor: the operator's own code, registered by name.

Configuration ``handler`` names it; a handler is an async function of the ``ExecutorCall``
returning the outputs::

    @register_integration_handler("ticket")
    async def ticket(call: ExecutorCall) -> dict[str, Any]:
        return {"ticket": f"T-{call.inputs['n']}"}

It may raise ``IntegrationFailed`` (final, message shown) or ``IntegrationRetryable``.
An unknown handler fails the execution listing the registered names.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from adapters.integrations.base import ExecutorCall, ExecutorOutcome, IntegrationFailed

IntegrationHandler = Callable[[ExecutorCall], Awaitable[dict[str, Any]]]
_HANDLERS: dict[str, IntegrationHandler] = {}


def register_integration_handler(name: str) -> Callable[[IntegrationHandler], IntegrationHandler]:
    def decorator(func: IntegrationHandler) -> IntegrationHandler:
        _HANDLERS[name] = func
        return func

    return decorator


def integration_handler_names() -> list[str]:
    return sorted(_HANDLERS)


@register_integration_handler("echo")
async def echo(call: ExecutorCall) -> dict[str, Any]:
    """Returns the execution's inputs as its outputs."""
    return dict(call.inputs)


class CustomExecutor:
    async def start(self, call: ExecutorCall) -> ExecutorOutcome:
        name = call.configuration.get("handler")
        handler = _HANDLERS.get(str(name)) if name is not None else None
        if handler is None:
            raise IntegrationFailed(f"custom integration handler {name!r} is not registered "
                                    f"(registered: {', '.join(integration_handler_names()) or 'none'})")
        outputs = await handler(call)
        if not isinstance(outputs, dict):
            raise IntegrationFailed(f"custom integration handler {name!r} returned {type(outputs).__name__}, "
                                    "not a mapping of outputs")
        return ExecutorOutcome(outputs=outputs)

    async def poll(self, call: ExecutorCall, state: dict[str, Any]) -> ExecutorOutcome:
        raise IntegrationFailed("a custom execution has nothing to wait for")
