"""The custom Temporal search attributes this service uses, declared in one place.

The Temporal dev server (``make up``, test fixtures) registers them from
:func:`dev_server_args`; ``docker-compose.yml`` registers the same list with
``temporal operator search-attribute create`` (keep the two in sync).

Standard library only: this module is imported from workflow code (sandboxed)
and from test fixtures.
"""

from __future__ import annotations

# name -> Temporal search attribute type (as spelled by the temporal CLI)
SEARCH_ATTRIBUTES: dict[str, str] = {
    "AccountId": "Int",
    "PipelineId": "Int",
    "TriggerType": "Keyword",
    "RunStatus": "Keyword",
}


def dev_server_args() -> list[str]:
    """``temporal server start-dev`` arguments registering :data:`SEARCH_ATTRIBUTES`."""
    args: list[str] = []
    for name, kind in SEARCH_ATTRIBUTES.items():
        args += ["--search-attribute", f"{name}={kind}"]
    return args
