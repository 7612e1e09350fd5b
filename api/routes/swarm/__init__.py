"""Docker Swarm clusters and their resources (the seed's Docker Swarm Management), under ``/swarm``:
one module per resource.

- :mod:`.clusters`: a cluster is a row reached through one manager's endpoint; with auto-sync its
  ``SwarmSyncWorkflow`` ``swarm-sync-<id>`` starts when the cluster is created (or auto-sync is
  turned on) and is terminated when it is deleted (or auto-sync is turned off), like Docker hosts.
- :mod:`.nodes`, :mod:`.swarm_services` (specs: :mod:`.service_specs`), :mod:`.stacks`
  (:mod:`services.swarm_stacks`), :mod:`.networks`, :mod:`.volumes`, :mod:`.secrets_configs`:
  read from and changed on the manager from the API (plain ``def`` routes, short timeouts).
  Every change we make is recorded as a ``SwarmEvent`` with ``source="api"`` (:mod:`.shared`): who,
  what (``event_type`` + ``action``), the target, the parameters without values that could be
  secret (env values, secret data), the result and the error.
- Stacks are deployed with the ``docker`` CLI (``docker stack deploy``, argv only, ``DOCKER_HOST``
  pointing at the cluster) after the compose file was validated here: YAML errors answer 422 with
  the line, a service without an image or with an image the manager does not have answers 422
  naming ``compose.services.<name>.image`` (no registry is assumed reachable).
- Engine failures answer a clear 4xx (404 missing, 409 conflict, 400 refused) or 502 when the
  manager cannot be reached or fails; never 500. ``/swarm/deployments`` belongs to the rollouts
  router (included before this one).
"""

from __future__ import annotations

from fastapi import APIRouter

from api.routes.swarm import (
    clusters,
    events,
    networks,
    nodes,
    secrets_configs,
    stacks,
    swarm_services,
    volumes,
)

__all__ = ["router"]

router = APIRouter(prefix="/swarm", tags=["swarm"])
for _module in (clusters, nodes, swarm_services, stacks, events, networks, volumes, secrets_configs):
    router.include_router(_module.router)
