"""Where secret values come from (the seed's ``SecretReference`` backends).

A backend resolves an account's secret names to values inside an activity; workflows only ever
carry names. The built-in backend is the encrypted ``secrets`` table (Fernet with the settings'
key, rotation through ``old_secret_keys``). Another backend (Vault, a cloud secret manager)
implements ``SecretBackend.resolve`` and is chosen in ``backend_for``; none ships yet, because
none could be tested against the real thing here.
"""

from __future__ import annotations

import abc
from collections.abc import Iterable

from cryptography.fernet import InvalidToken
from sqlalchemy import select
from sqlalchemy.orm import Session

from db.crypto import SecretBox
from db.models import Secret
from settings import Settings


class SecretResolutionError(Exception):
    """A name is not defined for the account, or its value cannot be read; the message says which."""


class SecretBackend(abc.ABC):
    @abc.abstractmethod
    def resolve(self, session: Session, account_id: int, names: Iterable[str]) -> dict[str, str]:
        """name -> value for every name, or SecretResolutionError naming what is missing."""


class EncryptedColumnBackend(SecretBackend):
    def __init__(self, settings: Settings) -> None:
        self._box = SecretBox(settings.secret_key, settings.old_secret_keys)

    def resolve(self, session: Session, account_id: int, names: Iterable[str]) -> dict[str, str]:
        wanted = sorted(set(names))
        if not wanted:
            return {}
        rows = session.scalars(select(Secret).where(Secret.account_id == account_id, Secret.name.in_(wanted))).all()
        values: dict[str, str] = {}
        for row in rows:
            try:
                values[row.name] = self._box.decrypt(row.encrypted_value)
            except InvalidToken:
                raise SecretResolutionError(
                    f"secret '{row.name}' cannot be decrypted with the configured keys") from None
        missing = [name for name in wanted if name not in values]
        if missing:
            raise SecretResolutionError(f"secret(s) not defined in this account: {', '.join(missing)}")
        return values


def backend_for(settings: Settings) -> SecretBackend:
    return EncryptedColumnBackend(settings)


def resolve_secrets(session: Session, settings: Settings, account_id: int, names: Iterable[str]) -> dict[str, str]:
    return backend_for(settings).resolve(session, account_id, names)
