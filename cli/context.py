"""The per-invocation state the root command hands its subcommands: settings and the client."""

from __future__ import annotations

from dataclasses import dataclass, field

import typer

from cli.client import ApiClient
from cli.config import Config, resolve


@dataclass
class State:
    api_url: str | None = None
    token: str | None = None
    _client: ApiClient | None = field(default=None, repr=False)

    @property
    def config(self) -> Config:
        return resolve(self.api_url, self.token)

    def client(self) -> ApiClient:
        if self._client is None:
            self._client = ApiClient(self.config)
        return self._client

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None


def client(ctx: typer.Context) -> ApiClient:
    """The API client for this invocation (made on first use, closed when the command ends)."""
    state = ctx.find_object(State)
    if state is None:  # a subcommand app invoked on its own (tests): settings from env and file
        state = ctx.ensure_object(State)
    made = state._client is None
    api = state.client()
    if made:
        ctx.find_root().call_on_close(state.close)
    return api
