"""The executors of the Integration Framework, one per ``integration_type`` (see ``base.py``).

``EXECUTORS`` maps a template's ``integration_type`` to its executor; the ``integration_start``
and ``integration_poll`` activities look the executor up here.
"""

from __future__ import annotations

from adapters.integrations.base import Executor

EXECUTORS: dict[str, Executor] = {}
