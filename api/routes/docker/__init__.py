"""Docker hosts, what runs on them, and image registries (the seed's Docker Host Management and
``RegistryService``), under ``/docker``: one module per resource.

- :mod:`.hosts`: the host rows, their connection test and sync rounds (:mod:`services.engines`).
- :mod:`.containers`, :mod:`.images`, :mod:`.networks` (and volumes): engine calls from the API,
  short timeouts, each change recorded as a ``DockerActivity`` (:mod:`.shared`).
- :mod:`.events`: engine events stored by the sync rounds, and the activities.
- :mod:`.registries`: image registries and the Registry HTTP API v2.

Tenant isolation (see :mod:`adapters.engine_access`): local engines need the operator's
``DEVOPS_ENGINE_ALLOWLIST`` (outside development), and on a *shared* engine every container,
network and volume route sees only objects labelled ``devops.account=<caller's account>`` (others
answer 404).
"""

from __future__ import annotations

from fastapi import APIRouter

from api.routes.docker import containers, events, hosts, images, networks, registries

router = APIRouter(prefix="/docker", tags=["docker"])
for _module in (hosts, containers, images, networks, events, registries):
    router.include_router(_module.router)

