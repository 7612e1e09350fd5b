"""Webhooks from git providers: verify (``signatures``), normalise (``events``), match (``matching``).

Pure functions with no I/O; the route, deduplication and run starting live elsewhere.
"""

from domain.webhooks.events import PayloadError, TriggerEvent, normalize, normalize_all
from domain.webhooks.matching import branch_filter_allows, matches, validate_branch_filter, validate_patterns
from domain.webhooks.signatures import (
    PROVIDERS,
    SignatureError,
    UnknownProviderError,
    WebhookError,
    delivery_id,
    event_name,
    verify,
)

__all__ = [
    "PROVIDERS",
    "PayloadError",
    "SignatureError",
    "TriggerEvent",
    "UnknownProviderError",
    "WebhookError",
    "branch_filter_allows",
    "delivery_id",
    "event_name",
    "matches",
    "normalize",
    "normalize_all",
    "validate_branch_filter",
    "validate_patterns",
    "verify",
]
