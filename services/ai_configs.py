"""AI configs of an account (the seed's AiConfig): create, change, delete, and the one a
``claude_execute`` step uses.

The API key is encrypted (SecretBox) and never returned or audited (``has_api_key`` only). A
``base_url`` is http(s); an ``openai_compatible`` config needs one; a loopback, private or
link-local host is refused unless private targets are allowed. At most one config of an account
``is_default``: setting it clears the others.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

from sqlalchemy import func, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from adapters.network_targets import check_host
from db.ai_models import AiConfig
from db.crypto import SecretBox
from domain import errors
from services import audit
from settings import Settings

FIELDS = ("name", "provider", "model", "base_url", "max_tokens", "temperature", "run_token_budget",
          "monthly_token_budget", "input_cost_per_mtok", "output_cost_per_mtok", "is_default")
RESOLVE_TIMEOUT_SECONDS = 2.0


def box(settings: Settings) -> SecretBox:
    return SecretBox(settings.secret_key, settings.old_secret_keys)


def list_configs(session: Session, account_id: int, *, limit: int, offset: int) -> tuple[list[AiConfig], int]:
    query = select(AiConfig).where(AiConfig.account_id == account_id)
    count = session.scalar(select(func.count()).select_from(query.subquery())) or 0
    rows = session.scalars(query.order_by(AiConfig.name).limit(limit).offset(offset)).all()
    return list(rows), count


def get_config(session: Session, account_id: int, config_id: int) -> AiConfig:
    row = session.scalar(select(AiConfig).where(AiConfig.id == config_id, AiConfig.account_id == account_id))
    if row is None:
        raise errors.not_found("ai config")
    return row


def base_url_problem(url: str, allow_private: bool) -> str | None:
    """Why ``url`` may not be a model endpoint: not http(s), or an internal host."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return "must be an http(s) URL with a host"
    if allow_private:
        return None
    try:
        port = parts.port or (443 if parts.scheme == "https" else 80)
    except ValueError:
        return "has an invalid port"
    return check_host(parts.hostname, port, what="the model base URL's", timeout=RESOLVE_TIMEOUT_SECONDS,
                      unresolvable_ok=True).problem


def _check(values: dict[str, Any], settings: Settings) -> None:
    base_url = values.get("base_url")
    if base_url:
        problem = base_url_problem(base_url, settings.private_targets_allowed)
        if problem:
            raise errors.field_error(["base_url"], f"base_url {problem}")
    elif values.get("provider") == "openai_compatible":
        raise errors.field_error(["base_url"], "an openai_compatible config needs base_url (the server's "
                                               "OpenAI-compatible API root, e.g. https://host/v1)")


def _audit_details(row: AiConfig) -> dict[str, Any]:
    return {"name": row.name, "provider": row.provider, "model": row.model, "base_url": row.base_url,
            "is_default": row.is_default, "authenticated": row.encrypted_api_key is not None}


def _clear_other_defaults(session: Session, row: AiConfig) -> None:
    session.execute(update(AiConfig).where(AiConfig.account_id == row.account_id, AiConfig.id != row.id,
                                           AiConfig.is_default.is_(True)).values(is_default=False))


def _flush_unique(session: Session, name: str) -> None:
    try:
        session.flush()
    except IntegrityError:
        session.rollback()
        raise errors.conflict(f"an ai config named {name!r} already exists in this account") from None


def create_config(session: Session, account_id: int, actor: audit.Actor, values: dict[str, Any],
                  api_key: str | None, settings: Settings) -> AiConfig:
    _check(values, settings)
    if session.scalar(select(AiConfig.id).where(AiConfig.account_id == account_id, AiConfig.name == values["name"])):
        raise errors.conflict(f"an ai config named {values['name']!r} already exists in this account")
    row = AiConfig(account_id=account_id, **{k: v for k, v in values.items() if k in FIELDS},
                   encrypted_api_key=box(settings).encrypt(api_key) if api_key else None)
    session.add(row)
    _flush_unique(session, row.name)
    if row.is_default:
        _clear_other_defaults(session, row)
    audit.record(session, account_id, actor, "ai_config.created", target_type="ai_config", target_id=row.id,
                 details=_audit_details(row))
    return row


def update_config(session: Session, account_id: int, actor: audit.Actor, config_id: int, changes: dict[str, Any],
                  settings: Settings) -> AiConfig:
    """``changes`` holds only the fields sent; ``api_key`` None clears the key."""
    row = get_config(session, account_id, config_id)
    effective = {name: getattr(row, name) for name in FIELDS} | {k: v for k, v in changes.items() if k in FIELDS}
    for required in ("name", "provider", "model", "max_tokens", "is_default"):
        if required in changes and changes[required] is None:
            raise errors.field_error([required], "may not be null")
    if "base_url" in changes or "provider" in changes:
        _check(effective, settings)
    if "name" in changes and changes["name"] != row.name and session.scalar(
            select(AiConfig.id).where(AiConfig.account_id == account_id, AiConfig.name == changes["name"])):
        raise errors.conflict(f"an ai config named {changes['name']!r} already exists in this account")
    for name in FIELDS:
        if name in changes:
            setattr(row, name, changes[name])
    if "api_key" in changes:
        key = changes["api_key"]
        row.encrypted_api_key = box(settings).encrypt(key) if key else None
    _flush_unique(session, row.name)
    if row.is_default:
        _clear_other_defaults(session, row)
    audit.record(session, account_id, actor, "ai_config.updated", target_type="ai_config", target_id=row.id,
                 details={**_audit_details(row), "changed": sorted(changes)})
    return row


def delete_config(session: Session, account_id: int, actor: audit.Actor, config_id: int) -> None:
    row = get_config(session, account_id, config_id)
    details = _audit_details(row)
    session.delete(row)
    audit.record(session, account_id, actor, "ai_config.deleted", target_type="ai_config", target_id=config_id,
                 details=details)


def config_for_step(session: Session, account_id: int, name: str | None) -> AiConfig:
    """The config a step names; without a name the account's default, else its only config.
    ``NotFound`` with what to do otherwise."""
    if name is not None:
        row = session.scalar(select(AiConfig).where(AiConfig.account_id == account_id, AiConfig.name == name))
        if row is None:
            raise errors.NotFound(f"no ai config named {name!r} in this account")
        return row
    row = session.scalar(select(AiConfig).where(AiConfig.account_id == account_id, AiConfig.is_default.is_(True)))
    if row is not None:
        return row
    rows = session.scalars(select(AiConfig).where(AiConfig.account_id == account_id).limit(2)).all()
    if len(rows) == 1:
        return rows[0]
    if not rows:
        raise errors.NotFound("this account has no ai config: create one (POST /ai_configs) before running "
                              "claude_execute steps")
    raise errors.NotFound("the account has several ai configs and none is the default: name one with "
                          "`with.ai_config` or mark one is_default")
