"""Webhook authenticity: signature checks, delivery ids and event names per provider.

Exceptions, so callers catch at the level they need (the route answers 401 for any
``SignatureError`` and never says which check failed)::

    WebhookError                 base of everything raised by ``domain.webhooks``
    ├── UnknownProviderError     the provider is not one of PROVIDERS (also a ValueError)
    ├── SignatureError           the delivery is not proven to come from the provider
    │   ├── MissingSecretError       no secret configured: nothing can be verified
    │   ├── MissingSignatureError    the signature/token header is absent
    │   ├── MalformedSignatureError  the header is present but not in the provider's format
    │   └── SignatureMismatchError   well-formed, but computed over other bytes or another key
    └── PayloadError             (in ``events``) a verified body we cannot read

Every comparison of a secret-derived value goes through ``hmac.compare_digest``.
"""

from __future__ import annotations

import hashlib
import hmac
import string
from collections.abc import Mapping

PROVIDERS = ("github", "gitlab", "gitea", "bitbucket")

_SIGNATURE_HEADER = {
    "github": "x-hub-signature-256",
    "gitea": "x-gitea-signature",
    "gitlab": "x-gitlab-token",
    "bitbucket": "x-hub-signature",
}
_DELIVERY_HEADER = {
    "github": "x-github-delivery",
    "gitea": "x-gitea-delivery",
    "gitlab": "x-gitlab-event-uuid",
    "bitbucket": "x-request-uuid",
}
_EVENT_HEADER = {
    "github": "x-github-event",
    "gitea": "x-gitea-event",
    "gitlab": "x-gitlab-event",
    "bitbucket": "x-event-key",
}
# Providers whose header carries "sha256=<hex>"; Gitea sends the bare hex digest.
_PREFIXED = {"github", "bitbucket"}
_HEX = frozenset(string.hexdigits)


class WebhookError(Exception):
    """Base of every error raised while reading a webhook delivery."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class UnknownProviderError(WebhookError, ValueError):
    """The provider name is not one we accept webhooks from."""


class SignatureError(WebhookError):
    """The delivery is not proven to come from the provider; answer 401."""


class MissingSecretError(SignatureError):
    """No secret is configured, so no delivery can be verified (an empty key is forgeable)."""


class MissingSignatureError(SignatureError):
    """The provider's signature or token header is absent."""


class MalformedSignatureError(SignatureError):
    """The header is present but not in the provider's documented format."""


class SignatureMismatchError(SignatureError):
    """The signature or token does not match the body and the configured secret."""


def _check_provider(provider: str) -> None:
    if provider not in PROVIDERS:
        raise UnknownProviderError(f"unknown provider '{provider}'; expected one of: {', '.join(PROVIDERS)}")


def header(headers: Mapping[str, str], name: str) -> str | None:
    """The value of header ``name``, looked up case-insensitively (HTTP names are)."""
    wanted = name.lower()
    for key, value in headers.items():
        if key.lower() == wanted:
            return value
    return None


def verify(provider: str, headers: Mapping[str, str], raw_body: bytes, secret: str | bytes) -> None:
    """Prove that ``raw_body`` was sent by ``provider`` holding ``secret``; raise ``SignatureError`` if not.

    GitHub (``X-Hub-Signature-256: sha256=<hex>``) and Bitbucket Cloud (``X-Hub-Signature:
    sha256=<hex>``) and Gitea (``X-Gitea-Signature: <hex>``) sign the raw body with
    HMAC-SHA256; GitLab sends the shared secret itself in ``X-Gitlab-Token``. The body must be
    the bytes as received: re-serialised JSON with the same data does not verify.
    """
    _check_provider(provider)
    key = secret.encode() if isinstance(secret, str) else bytes(secret)
    if not key:
        raise MissingSecretError("no webhook secret is configured for this repository")
    name = _SIGNATURE_HEADER[provider]
    given = header(headers, name)
    if given is None or not given.strip():
        raise MissingSignatureError(f"missing {name} header")
    given = given.strip()
    if provider == "gitlab":
        # Compare bytes: compare_digest refuses non-ASCII str, and a token may contain any text.
        if not hmac.compare_digest(given.encode(), key):
            raise SignatureMismatchError(f"{name} does not match the configured secret")
        return
    if provider in _PREFIXED:
        scheme, sep, digest = given.partition("=")
        if not sep or scheme.lower() != "sha256":
            raise MalformedSignatureError(f"{name} must be 'sha256=<hex digest>'")
    else:
        digest = given
    digest = digest.lower()
    if len(digest) != hashlib.sha256().digest_size * 2 or not _HEX.issuperset(digest):
        raise MalformedSignatureError(f"{name} is not a hex SHA-256 digest")
    expected = hmac.new(key, raw_body, hashlib.sha256).hexdigest()
    if not hmac.compare_digest(expected.encode(), digest.encode()):
        raise SignatureMismatchError(f"{name} does not match the body")


def sign(provider: str, raw_body: bytes, secret: str | bytes) -> dict[str, str]:
    """The signature header a provider would send for ``raw_body`` (for tests and benchmarks)."""
    _check_provider(provider)
    key = secret.encode() if isinstance(secret, str) else bytes(secret)
    name = {"github": "X-Hub-Signature-256", "gitea": "X-Gitea-Signature", "gitlab": "X-Gitlab-Token",
            "bitbucket": "X-Hub-Signature"}[provider]
    if provider == "gitlab":
        return {name: key.decode()}
    digest = hmac.new(key, raw_body, hashlib.sha256).hexdigest()
    return {name: f"sha256={digest}" if provider in _PREFIXED else digest}


def delivery_id(provider: str, headers: Mapping[str, str]) -> str | None:
    """The provider's unique id of this delivery (the deduplication key), or None if absent."""
    _check_provider(provider)
    value = header(headers, _DELIVERY_HEADER[provider])
    return (value.strip() or None) if value is not None else None


def event_name(provider: str, headers: Mapping[str, str]) -> str | None:
    """The provider's event name (``push``, ``Merge Request Hook``, ``repo:push``, ...), or None."""
    _check_provider(provider)
    value = header(headers, _EVENT_HEADER[provider])
    return (value.strip() or None) if value is not None else None
