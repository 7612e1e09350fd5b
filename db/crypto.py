"""Encryption of secrets at rest: Fernet keys derived from the settings' secret key.

``MultiFernet`` decrypts with the current key and every old key, and encrypts with the
current one, so rotation is: set a new ``DEVOPS_SECRET_KEY``, move the previous value into
``DEVOPS_OLD_SECRET_KEYS``, and call :func:`rotate` on stored tokens at leisure.
"""

from __future__ import annotations

import base64
import hashlib

from cryptography.fernet import Fernet, InvalidToken, MultiFernet

__all__ = ["SecretBox", "InvalidToken"]


def _fernet(secret: str) -> Fernet:
    digest = hashlib.sha256(b"devops-secrets:" + secret.encode()).digest()
    return Fernet(base64.urlsafe_b64encode(digest))


class SecretBox:
    def __init__(self, secret_key: str, old_secret_keys: list[str] | tuple[str, ...] = ()) -> None:
        self._box = MultiFernet([_fernet(secret_key), *(_fernet(k) for k in old_secret_keys)])

    def encrypt(self, value: str) -> bytes:
        return self._box.encrypt(value.encode())

    def decrypt(self, token: bytes) -> str:
        return self._box.decrypt(token).decode()

    def rotate(self, token: bytes) -> bytes:
        return self._box.rotate(token)
