"""The calling user: who am I, and where do my notifications (approval requests) go."""

from urllib.parse import urlsplit

from fastapi import APIRouter
from pydantic import BaseModel, ConfigDict, Field, field_validator

from adapters.network_targets import check_host
from api import errors
from api.deps import CurrentCaller, SessionDep, SettingsDep
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


def notify_url_problem(url: str, allow_private: bool) -> str | None:
    """Approval requests carry single-use approval links and are POSTed by the worker: an
    internal address (loopback, private, link-local) is refused at save unless private targets
    are allowed. A name that does not resolve now is accepted; delivery checks it again."""
    if allow_private:
        return None
    parts = urlsplit(url)
    try:
        port = parts.port or (443 if parts.scheme == "https" else 80)
    except ValueError:
        return "has an invalid port"
    return check_host(parts.hostname or "", port, what="the notify URL's", timeout=2.0, unresolvable_ok=True).problem


def _public(user: User) -> UserPublic:
    return UserPublic(id=user.id, email=user.email, role=user.role, notify_url=user.notify_url)


@router.get("/me", response_model=UserPublic)
def show_current_user(session: SessionDep, caller: CurrentCaller) -> UserPublic:
    return _public(session.get_one(User, caller.user_id))


@router.patch("/me", response_model=UserPublic)
def update_current_user(body: UserUpdate, session: SessionDep, caller: CurrentCaller, settings: SettingsDep) -> UserPublic:
    """Set where your notifications are delivered (each approval link reaches only you). An
    http(s) URL; loopback, private and link-local hosts are 422 unless private targets are allowed."""
    if body.notify_url:
        problem = notify_url_problem(body.notify_url, settings.private_targets_allowed)
        if problem:
            raise errors.field_error(["notify_url"], problem)
    user = session.get_one(User, caller.user_id)
    user.notify_url = body.notify_url
    session.commit()
    return _public(user)
