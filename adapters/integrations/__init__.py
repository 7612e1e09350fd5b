"""The executors of the Integration Framework, one per ``integration_type`` (see ``base.py``).

``EXECUTORS`` maps a template's ``integration_type`` to its executor; the ``integration_start``
and ``integration_poll`` activities look the executor up here.
"""

from __future__ import annotations

from adapters.integrations.base import Executor
from adapters.integrations.custom import CustomExecutor
from adapters.integrations.github_action import GithubActionExecutor
from adapters.integrations.mcp_server import McpServerExecutor
from adapters.integrations.rest_api import RestApiExecutor
from adapters.integrations.webhook import WebhookExecutor

EXECUTORS: dict[str, Executor] = {}
EXECUTORS["webhook"] = WebhookExecutor()
EXECUTORS["rest_api"] = RestApiExecutor()
EXECUTORS["custom"] = CustomExecutor()
EXECUTORS["mcp_server"] = McpServerExecutor()
EXECUTORS["github_action"] = GithubActionExecutor()
