"""The calling user: who am I, and where do my notifications (approval requests) go."""

from urllib.parse import urlsplit

from fastapi import APIRouter
from pydantic import BaseModel, ConfigDict, Field, field_validator

from api.deps import CurrentCaller, SessionDep
from db.models import User

router = APIRouter(prefix="/users", tags=["users"])


class UserPublic(BaseModel):
    id: int
    email: str
    role: str
    notify_url: str | None


class UserUpdate(BaseModel):
    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [{"notify_url": "https://hooks.example.com/me"}]})

    notify_url: str | None = Field(None, max_length=2000, description="http(s) URL receiving your approval requests")

    @field_validator("notify_url")
    @classmethod
    def _http_url(cls, value: str | None) -> str | None:
        if value is None or value == "":
            return None
        parts = urlsplit(value)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError("must be an http(s) URL")
        return value


def _public(user: User) -> UserPublic:
    return UserPublic(id=user.id, email=user.email, role=user.role, notify_url=user.notify_url)


@router.get("/me", response_model=UserPublic)
def me(session: SessionDep, caller: CurrentCaller) -> UserPublic:
    return _public(session.get_one(User, caller.user_id))


@router.patch("/me", response_model=UserPublic)
def update_me(body: UserUpdate, session: SessionDep, caller: CurrentCaller) -> UserPublic:
    """Set where your notifications are delivered (each approval link reaches only you)."""
    user = session.get_one(User, caller.user_id)
    user.notify_url = body.notify_url
    session.commit()
    return _public(user)
