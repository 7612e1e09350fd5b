"""The request path shared by the clients that speak to a provider with httpx (Gitea,
Bitbucket): transport failures become ``ProviderDown``, error answers are classified by
status code through ``error_for_status``; only the place of the provider's message differs."""

from typing import Any, ClassVar

import httpx

from adapters.git_providers.base import ProviderDown, error_for_status


class HttpxRequests:
    """Mixin: ``self._http`` is an ``httpx.Client``; subclasses name themselves and say where
    their error bodies keep the message."""

    provider: ClassVar[str]
    label: ClassVar[str]  # the provider's name as users read it
    _http: httpx.Client

    @staticmethod
    def _error_detail(body: Any) -> str:
        return ""

    def _request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        try:
            response = self._http.request(method, path, **kwargs)
        except httpx.TransportError as exc:
            raise ProviderDown(f"{self.label} unreachable: {type(exc).__name__}", provider=self.provider) from exc
        if response.is_success:
            return response
        try:
            detail = self._error_detail(response.json())
        except (ValueError, AttributeError):
            detail = ""
        raise error_for_status(self.provider, response.status_code, response.headers,
                               f"{self.label} answered {response.status_code} to {method} {path}: {detail}")
