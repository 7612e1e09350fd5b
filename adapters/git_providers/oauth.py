"""The OAuth 2.0 authorization-code flow against GitHub, GitLab, Gitea and Bitbucket (the seed's
``OAuthService``): where each provider's authorize and token endpoints live, the code exchange,
the refresh, and :func:`fresh_access_token` which activities call for ``auth_type='oauth'``
credentials.

Failures map into the hierarchy of ``adapters.git_providers.base``::

    AuthError (OAuthGrantError)   the provider refused the code, refresh token or client
                                  (invalid_grant, bad_verification_code, invalid_client, 401 ...)
    RateLimited                   429
    ProviderDown                  5xx, connection refused, timeouts
    ProviderError                 any other unusable answer (no access_token, not JSON ...)

Messages name the provider, the endpoint and the OAuth error code only: never a token, a code
or the client secret (providers may echo them in their descriptions, so those are not kept).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import urlencode, urlsplit

import httpx
from sqlalchemy.orm import Session

from adapters.git_providers.base import (
    AuthError,
    ProviderDown,
    ProviderError,
    RateLimited,
    parse_retry_after,
)
from db.crypto import SecretBox
from db.models import GitProvider, GitProviderCredential
from settings import Settings

#: An access token this close to its expiry is refreshed before use.
REFRESH_MARGIN = timedelta(seconds=60)
TIMEOUT = httpx.Timeout(20.0, connect=5.0)

#: The public web origin of each hosted service.
PUBLIC_WEB = {"github": "https://github.com", "gitlab": "https://gitlab.com", "bitbucket": "https://bitbucket.org"}
LABELS = {"github": "GitHub", "gitlab": "GitLab", "gitea": "Gitea", "bitbucket": "Bitbucket"}
#: (authorize path, token path) under the web origin, as each provider documents them.
PATHS = {
    "github": ("/login/oauth/authorize", "/login/oauth/access_token"),
    "gitlab": ("/oauth/authorize", "/oauth/token"),
    "gitea": ("/login/oauth/authorize", "/login/oauth/access_token"),
    "bitbucket": ("/site/oauth2/authorize", "/site/oauth2/access_token"),
}
#: The REST API path under the web origin of a self-hosted server.
API_SUFFIXES = {"github": "/api/v3", "gitlab": "/api/v4", "gitea": "/api/v1", "bitbucket": "/2.0"}
#: API hosts of the public services whose web origin is another host.
PUBLIC_API_HOSTS = {"api.github.com": "https://github.com", "api.bitbucket.org": "https://bitbucket.org"}

_ERROR_CODE = re.compile(r"^[A-Za-z0-9_.\-]{1,64}$")


class OAuthNotConfigured(ValueError):
    """The provider has no OAuth application (client id and secret) to run the flow with."""


class OAuthGrantError(AuthError):
    """The provider refused the grant; ``error_code`` is its OAuth error name (``invalid_grant``,
    ``bad_verification_code``, ``invalid_client`` ...), safe to show."""

    def __init__(self, message: str, *, provider: str = "", status: int | None = None, error_code: str = "") -> None:
        super().__init__(message, provider=provider, status=status)
        self.error_code = error_code


@dataclass(frozen=True)
class OAuthApp:
    """A provider's OAuth application, with its secret decrypted (keep inside the request/activity)."""

    provider_type: str
    web_url: str
    client_id: str
    client_secret: str
    scopes: tuple[str, ...] = ()

    @property
    def label(self) -> str:
        return LABELS.get(self.provider_type, self.provider_type)

    @property
    def authorize_endpoint(self) -> str:
        return self.web_url + PATHS[self.provider_type][0]

    @property
    def token_endpoint(self) -> str:
        return self.web_url + PATHS[self.provider_type][1]


@dataclass(frozen=True)
class TokenSet:
    """What a token endpoint issued; ``expires_at`` None when the token does not expire."""

    access_token: str
    refresh_token: str | None
    expires_at: datetime | None
    scopes: tuple[str, ...]

    def __repr__(self) -> str:  # never print the tokens
        return f"TokenSet(expires_at={self.expires_at!r}, scopes={self.scopes!r})"


def web_url(provider_type: str, base_url: str | None, oauth_base_url: str | None = None) -> str:
    """The web origin serving the authorize and token endpoints: ``oauth_base_url`` when set, else
    derived from the API ``base_url`` (``https://host/api/v3`` → ``https://host``), else the public site."""
    if provider_type not in PATHS:
        raise ValueError(f"unknown provider type {provider_type!r}")
    if oauth_base_url:
        return oauth_base_url.rstrip("/")
    if not base_url:
        if provider_type not in PUBLIC_WEB:
            raise OAuthNotConfigured(f"a {provider_type} provider needs its base_url or oauth_base_url")
        return PUBLIC_WEB[provider_type]
    parts = urlsplit(base_url.rstrip("/"))
    host = (parts.hostname or "").lower()
    if host in PUBLIC_API_HOSTS:
        return PUBLIC_API_HOSTS[host]
    path = parts.path.rstrip("/")
    path = path.removesuffix(API_SUFFIXES[provider_type])
    if provider_type == "github":
        path = path.removesuffix("/api")  # GHE's GraphQL-style base, https://host/api
    return f"{parts.scheme}://{parts.netloc}{path}"


def oauth_app(provider: GitProvider, box: SecretBox) -> OAuthApp:
    """The provider's OAuth application, or OAuthNotConfigured saying what to set."""
    missing = [name for name, value in (("oauth_client_id", provider.oauth_client_id),
                                        ("oauth_client_secret", provider.encrypted_oauth_client_secret))
               if not value]
    if missing:
        raise OAuthNotConfigured(f"provider {provider.id} has no OAuth application: set {' and '.join(missing)} "
                                 f"with PATCH /providers/{provider.id}")
    return OAuthApp(
        provider_type=provider.provider_type,
        web_url=web_url(provider.provider_type, provider.base_url, provider.oauth_base_url),
        client_id=provider.oauth_client_id or "",
        client_secret=box.decrypt(provider.encrypted_oauth_client_secret or b""),
        scopes=tuple(provider.oauth_scopes or ()),
    )


def authorize_url(app: OAuthApp, redirect_uri: str, state: str) -> str:
    """Where to send the user's browser to grant access."""
    params = {"client_id": app.client_id, "redirect_uri": redirect_uri, "response_type": "code", "state": state}
    if app.scopes and app.provider_type != "bitbucket":  # Bitbucket takes scopes from the consumer's settings
        # GitHub documents space-separated scopes (commas are accepted too); GitLab and Gitea spaces
        params["scope"] = " ".join(app.scopes)
    return f"{app.authorize_endpoint}?{urlencode(params)}"


def exchange_code(app: OAuthApp, code: str, redirect_uri: str, *, http: httpx.Client | None = None) -> TokenSet:
    """Swap an authorization code for tokens (``grant_type=authorization_code``)."""
    return _token_request(app, {"grant_type": "authorization_code", "code": code, "redirect_uri": redirect_uri},
                          "authorization code", http)


def refresh(app: OAuthApp, refresh_token: str, *, http: httpx.Client | None = None) -> TokenSet:
    """New tokens for a refresh token (``grant_type=refresh_token``); providers may rotate it."""
    return _token_request(app, {"grant_type": "refresh_token", "refresh_token": refresh_token}, "refresh token", http)


def _token_request(app: OAuthApp, form: dict[str, str], what: str, http: httpx.Client | None) -> TokenSet:
    headers = {"Accept": "application/json"}
    auth: tuple[str, str] | None = None
    if app.provider_type == "bitbucket":
        auth = (app.client_id, app.client_secret)  # Bitbucket documents HTTP Basic for the consumer
    else:
        form = {**form, "client_id": app.client_id, "client_secret": app.client_secret}
    client = http or httpx.Client(timeout=TIMEOUT)
    try:
        response = client.post(app.token_endpoint, data=form, headers=headers, auth=auth)
    except httpx.TransportError as exc:
        raise ProviderDown(f"{app.label} OAuth token endpoint unreachable: {type(exc).__name__}",
                           provider=app.provider_type) from None
    finally:
        if http is None:
            client.close()
    return _token_set(app, response, what)


def _token_set(app: OAuthApp, response: httpx.Response, what: str) -> TokenSet:
    status = response.status_code
    where = f"{app.label} OAuth token endpoint"
    if status == 429:
        raise RateLimited(f"{where} answered 429", provider=app.provider_type, status=status,
                          retry_after=parse_retry_after(response.headers.get("retry-after")))
    if status >= 500:
        raise ProviderDown(f"{where} answered {status}", provider=app.provider_type, status=status)
    try:
        body: Any = response.json()
    except ValueError:
        body = None
    if not isinstance(body, dict):
        if status in (401, 403):
            raise OAuthGrantError(f"{where} refused the {what} ({status})", provider=app.provider_type,
                                  status=status, error_code="unauthorized")
        raise ProviderError(f"{where} answered {status} without a JSON object", provider=app.provider_type,
                            status=status)
    # GitHub answers 200 with {"error": ...}; the others 400/401.
    code = body.get("error")
    if code or not response.is_success:
        code = code if isinstance(code, str) and _ERROR_CODE.match(code) else "unknown_error"
        if status in (401, 403) or code in _REFUSALS or 200 <= status < 300:
            raise OAuthGrantError(f"{where} refused the {what} ({code})", provider=app.provider_type,
                                  status=status if status >= 400 else 401, error_code=code)
        raise ProviderError(f"{where} answered {status} ({code})", provider=app.provider_type, status=status)
    access = body.get("access_token")
    if not isinstance(access, str) or not access:
        raise ProviderError(f"{where} answered without an access_token", provider=app.provider_type, status=status)
    refresh_token = body.get("refresh_token")
    expires_in = body.get("expires_in")
    expires_at = None
    if isinstance(expires_in, (int, float)) and not isinstance(expires_in, bool) and expires_in > 0:
        expires_at = datetime.now(UTC) + timedelta(seconds=float(expires_in))
    # GitHub: "repo,gist"; GitLab/Gitea: "api read_user"; Bitbucket: "scopes" (now "scope")
    raw_scope = body.get("scope", body.get("scopes")) or ""
    scopes = tuple(s for s in re.split(r"[,\s]+", raw_scope) if s) if isinstance(raw_scope, str) else ()
    return TokenSet(access_token=access, refresh_token=refresh_token if isinstance(refresh_token, str) and refresh_token
                    else None, expires_at=expires_at, scopes=scopes)


_REFUSALS = frozenset({
    "invalid_grant", "invalid_client", "unauthorized_client", "invalid_request", "access_denied",
    "bad_verification_code", "bad_refresh_token", "incorrect_client_credentials", "redirect_uri_mismatch",
    "unsupported_grant_type", "invalid_scope",
})


def store_tokens(credential: GitProviderCredential, tokens: TokenSet, box: SecretBox) -> None:
    """Put freshly issued tokens on the credential (encrypted); a refresh that did not rotate the
    refresh token keeps the old one."""
    credential.auth_type = "oauth"
    credential.encrypted_token = box.encrypt(tokens.access_token)
    if tokens.refresh_token:
        credential.encrypted_refresh_token = box.encrypt(tokens.refresh_token)
    credential.token_expires_at = tokens.expires_at


def _needs_refresh(credential: GitProviderCredential, now: datetime) -> bool:
    expires = credential.token_expires_at
    if expires is None or credential.encrypted_refresh_token is None:
        return False
    if expires.tzinfo is None:
        expires = expires.replace(tzinfo=UTC)
    return expires - now <= REFRESH_MARGIN


def fresh_access_token(session: Session, settings: Settings, credential: GitProviderCredential,
                       provider: GitProvider, *, http: httpx.Client | None = None) -> str:
    """The credential's access token, refreshed first when it expires within a minute and the
    provider issued a refresh token. New tokens are stored on the row and flushed; the caller
    commits. A refresh the provider refuses raises AuthError: the user has to connect again."""
    box = SecretBox(settings.secret_key, settings.old_secret_keys)
    if not _needs_refresh(credential, datetime.now(UTC)):
        return box.decrypt(credential.encrypted_token)
    # Lock the row (PostgreSQL) and look again: a concurrent activity may have refreshed already,
    # and a rotated refresh token works once.
    session.refresh(credential, with_for_update=True)
    if not _needs_refresh(credential, datetime.now(UTC)):
        return box.decrypt(credential.encrypted_token)
    try:
        app = oauth_app(provider, box)
    except OAuthNotConfigured as exc:
        raise AuthError(f"credential {credential.id} expired and cannot be refreshed: {exc}",
                        provider=provider.provider_type) from None
    tokens = refresh(app, box.decrypt(credential.encrypted_refresh_token or b""), http=http)
    store_tokens(credential, tokens, box)
    session.flush()
    return tokens.access_token
