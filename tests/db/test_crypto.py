"""``SecretBox``: Fernet encryption of secrets at rest, with key rotation through MultiFernet."""

from __future__ import annotations

import pytest

from db.crypto import InvalidToken, SecretBox

OLD_KEY = "old-secret-key-0123456789abcdef"
NEW_KEY = "new-secret-key-0123456789abcdef"


def test_encrypt_then_decrypt_gives_the_value_back():
    box = SecretBox(NEW_KEY)
    token = box.encrypt("s3cret ✓ value")
    assert isinstance(token, bytes)
    assert b"s3cret" not in token
    assert box.decrypt(token) == "s3cret ✓ value"


def test_encrypting_twice_gives_different_tokens():
    box = SecretBox(NEW_KEY)
    assert box.encrypt("same") != box.encrypt("same")


def test_the_same_key_string_decrypts_across_instances():
    assert SecretBox(NEW_KEY).decrypt(SecretBox(NEW_KEY).encrypt("v")) == "v"


def test_a_value_encrypted_under_an_old_key_decrypts_with_the_old_key_listed():
    token = SecretBox(OLD_KEY).encrypt("rotated value")
    assert SecretBox(NEW_KEY, [OLD_KEY]).decrypt(token) == "rotated value"
    assert SecretBox(NEW_KEY, (OLD_KEY,)).decrypt(token) == "rotated value"


def test_rotate_re_encrypts_under_the_new_key():
    token = SecretBox(OLD_KEY).encrypt("rotated value")
    rotated = SecretBox(NEW_KEY, [OLD_KEY]).rotate(token)
    assert SecretBox(NEW_KEY).decrypt(rotated) == "rotated value"
    with pytest.raises(InvalidToken):
        SecretBox(OLD_KEY).decrypt(rotated)


def test_new_values_are_encrypted_with_the_current_key():
    token = SecretBox(NEW_KEY, [OLD_KEY]).encrypt("fresh")
    assert SecretBox(NEW_KEY).decrypt(token) == "fresh"


def test_a_wrong_key_raises_invalid_token():
    token = SecretBox(OLD_KEY).encrypt("value")
    with pytest.raises(InvalidToken):
        SecretBox(NEW_KEY).decrypt(token)


def test_a_tampered_token_raises_invalid_token():
    token = bytearray(SecretBox(NEW_KEY).encrypt("value"))
    token[-5] = ord("A") if token[-5] != ord("A") else ord("B")
    with pytest.raises(InvalidToken):
        SecretBox(NEW_KEY).decrypt(bytes(token))
