"""The one Temporal client of the API process, connected lazily and shared by all requests."""

from __future__ import annotations

import asyncio

from temporalio.client import Client

from settings import Settings


class TemporalGateway:
    def __init__(self, settings: Settings, client: Client | None = None) -> None:
        self._settings = settings
        self._client = client
        self._lock = asyncio.Lock()

    async def client(self) -> Client:
        if self._client is None:
            async with self._lock:
                if self._client is None:
                    self._client = await Client.connect(
                        self._settings.temporal_address, namespace=self._settings.temporal_namespace
                    )
        return self._client

    def ui_url(self, workflow_id: str) -> str:
        base = self._settings.resolved_temporal_ui_url
        return f"{base}/namespaces/{self._settings.temporal_namespace}/workflows/{workflow_id}"
