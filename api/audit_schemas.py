"""Shape of the audit log: ``AuditEventPublic`` (who did what, when, from where)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, Field

from api.pages import Page


class AuditEventPublic(BaseModel):
    id: int
    action: str = Field(description="`area.verb`, e.g. `user.invited`, `token.revoked`, `secret.updated`")
    actor: str = Field(description="the acting user's email, `operator` or `system`")
    actor_user_id: int | None = None
    token_id: int | None = Field(None, description="the API token the change was made with")
    target_type: str = Field(description="what was changed: `user`, `token`, `secret`, `credential`, ...")
    target_id: str
    details: dict[str, Any] = Field(description="what changed; never a secret value or a token")
    ip: str = Field(description="the client address the request came from")
    user_agent: str
    created_at: datetime

    @classmethod
    def of(cls, row: Any) -> AuditEventPublic:
        return cls(id=row.id, action=row.action, actor=row.actor, actor_user_id=row.actor_user_id,
                   token_id=row.token_id, target_type=row.target_type, target_id=row.target_id,
                   details=dict(row.details or {}), ip=row.ip, user_agent=row.user_agent,
                   created_at=row.created_at)


AuditEventsPublic = Page[AuditEventPublic]
