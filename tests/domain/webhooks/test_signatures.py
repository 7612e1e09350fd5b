"""Webhook signature verification: the forgery matrix per provider, plus header lookups."""

from __future__ import annotations

import hashlib
import hmac
import json
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from domain.webhooks import signatures
from domain.webhooks.signatures import (
    PROVIDERS,
    MalformedSignatureError,
    MissingSecretError,
    MissingSignatureError,
    SignatureError,
    SignatureMismatchError,
    UnknownProviderError,
    delivery_id,
    event_name,
    sign,
    verify,
)

SECRET = "s3cr3t-webhook-key"
BODY = (Path(__file__).parent / "payloads" / "github_push.json").read_bytes()
HEADER = {"github": "X-Hub-Signature-256", "gitea": "X-Gitea-Signature", "gitlab": "X-Gitlab-Token",
          "bitbucket": "X-Hub-Signature"}
HMAC_PROVIDERS = ("github", "gitea", "bitbucket")


def _flip(text: str, index: int) -> str:
    """``text`` with one hex digit changed, still a valid hex digit."""
    swapped = "0" if text[index] != "0" else "1"
    return text[:index] + swapped + text[index + 1:]


@pytest.mark.parametrize("provider", PROVIDERS)
def test_the_providers_own_signature_is_accepted(provider: str) -> None:
    verify(provider, sign(provider, BODY, SECRET), BODY, SECRET)


def test_signatures_follow_each_providers_documented_format() -> None:
    digest = hmac.new(SECRET.encode(), BODY, hashlib.sha256).hexdigest()
    assert sign("github", BODY, SECRET) == {"X-Hub-Signature-256": f"sha256={digest}"}
    assert sign("bitbucket", BODY, SECRET) == {"X-Hub-Signature": f"sha256={digest}"}
    assert sign("gitea", BODY, SECRET) == {"X-Gitea-Signature": digest}
    assert sign("gitlab", BODY, SECRET) == {"X-Gitlab-Token": SECRET}


@pytest.mark.parametrize("provider", PROVIDERS)
def test_header_names_are_case_insensitive(provider: str) -> None:
    ((name, value),) = sign(provider, BODY, SECRET).items()
    verify(provider, {name.lower(): value}, BODY, SECRET)
    verify(provider, {name.upper(): value}, BODY, SECRET)


@pytest.mark.parametrize("provider", HMAC_PROVIDERS)
@pytest.mark.parametrize("index", [0, 1, len(BODY) // 2, len(BODY) - 1])
def test_a_flipped_byte_in_the_body_is_refused(provider: str, index: int) -> None:
    headers = sign(provider, BODY, SECRET)
    forged = bytearray(BODY)
    forged[index] ^= 0x01
    with pytest.raises(SignatureMismatchError):
        verify(provider, headers, bytes(forged), SECRET)


@pytest.mark.parametrize("provider", HMAC_PROVIDERS)
@pytest.mark.parametrize("position", ["first", "middle", "last"])
def test_a_flipped_byte_in_the_signature_is_refused(provider: str, position: str) -> None:
    ((name, value),) = sign(provider, BODY, SECRET).items()
    index = {"first": len(value) - 64, "middle": len(value) - 32, "last": len(value) - 1}[position]
    with pytest.raises(SignatureMismatchError):
        verify(provider, {name: _flip(value, index)}, BODY, SECRET)


def test_a_gitlab_token_differing_in_one_character_is_refused() -> None:
    with pytest.raises(SignatureMismatchError):
        verify("gitlab", {"X-Gitlab-Token": SECRET[:-1] + "X"}, BODY, SECRET)
    with pytest.raises(SignatureMismatchError):
        verify("gitlab", {"X-Gitlab-Token": SECRET + "x"}, BODY, SECRET)


@pytest.mark.parametrize("provider", PROVIDERS)
def test_a_missing_signature_header_is_refused(provider: str) -> None:
    with pytest.raises(MissingSignatureError):
        verify(provider, {"Content-Type": "application/json"}, BODY, SECRET)
    with pytest.raises(MissingSignatureError):
        verify(provider, {HEADER[provider]: "  "}, BODY, SECRET)


def test_another_providers_header_does_not_stand_in() -> None:
    # A valid GitHub signature sent to the Gitea endpoint is still a missing Gitea signature.
    with pytest.raises(MissingSignatureError):
        verify("gitea", sign("github", BODY, SECRET), BODY, SECRET)


@pytest.mark.parametrize("provider", ["github", "bitbucket"])
def test_a_sha1_prefix_is_refused(provider: str) -> None:
    ((name, value),) = sign(provider, BODY, SECRET).items()
    sha1 = hmac.new(SECRET.encode(), BODY, hashlib.sha1).hexdigest()
    for forged in (value.replace("sha256=", "sha1="), f"sha1={sha1}", value.removeprefix("sha256=")):
        with pytest.raises(MalformedSignatureError):
            verify(provider, {name: forged}, BODY, SECRET)


def test_a_prefixed_gitea_signature_is_refused() -> None:
    digest = sign("gitea", BODY, SECRET)["X-Gitea-Signature"]
    with pytest.raises(MalformedSignatureError):
        verify("gitea", {"X-Gitea-Signature": f"sha256={digest}"}, BODY, SECRET)


@pytest.mark.parametrize("provider", HMAC_PROVIDERS)
@pytest.mark.parametrize("garbage", ["sha256=", "sha256=zz", "sha256=" + "g" * 64, "sha256=é" + "0" * 63])
def test_non_hex_or_short_digests_are_refused(provider: str, garbage: str) -> None:
    value = garbage if provider != "gitea" else garbage.removeprefix("sha256=") or "x"
    with pytest.raises(MalformedSignatureError):
        verify(provider, {HEADER[provider]: value}, BODY, SECRET)


@pytest.mark.parametrize("provider", PROVIDERS)
def test_an_empty_secret_refuses_everything(provider: str) -> None:
    # An HMAC under an empty key is computable by anyone, so an unconfigured secret verifies nothing.
    for secret in ("", b""):
        with pytest.raises(MissingSecretError):
            verify(provider, sign(provider, BODY, secret), BODY, secret)


@pytest.mark.parametrize("provider", HMAC_PROVIDERS)
def test_re_serialised_json_with_the_same_data_is_refused(provider: str) -> None:
    headers = sign(provider, BODY, SECRET)
    data = json.loads(BODY)
    for reserialised in (json.dumps(data).encode(), json.dumps(data, separators=(",", ":")).encode(),
                         json.dumps(data, sort_keys=True, indent=2).encode()):
        assert json.loads(reserialised) == data and reserialised != BODY
        with pytest.raises(SignatureMismatchError):
            verify(provider, headers, reserialised, SECRET)


@pytest.mark.parametrize("provider", PROVIDERS)
def test_a_signature_made_with_another_secret_is_refused(provider: str) -> None:
    with pytest.raises(SignatureMismatchError):
        verify(provider, sign(provider, BODY, "another-secret"), BODY, SECRET)


def test_every_refusal_is_a_signature_error() -> None:
    for error in (MissingSecretError, MissingSignatureError, MalformedSignatureError, SignatureMismatchError):
        assert issubclass(error, SignatureError)
    with pytest.raises(SignatureError) as caught:
        verify("github", {}, BODY, SECRET)
    assert caught.value.reason == "missing x-hub-signature-256 header"


def test_an_unknown_provider_is_refused() -> None:
    with pytest.raises(UnknownProviderError):
        verify("sourceforge", {}, BODY, SECRET)
    with pytest.raises(ValueError):
        delivery_id("sourceforge", {})


def test_verification_compares_in_constant_time(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[tuple[bytes, bytes]] = []
    real = hmac.compare_digest

    def spy(a: bytes, b: bytes) -> bool:
        calls.append((a, b))
        return real(a, b)

    monkeypatch.setattr(signatures.hmac, "compare_digest", spy)
    for provider in PROVIDERS:
        verify(provider, sign(provider, BODY, SECRET), BODY, SECRET)
    assert len(calls) == len(PROVIDERS)


@given(body=st.binary(max_size=512), secret=st.text(min_size=1, max_size=40), flip=st.integers(min_value=0))
def test_any_body_verifies_only_unaltered(body: bytes, secret: str, flip: int) -> None:
    for provider in HMAC_PROVIDERS:
        headers = sign(provider, body, secret)
        verify(provider, headers, body, secret)
        altered = body + b"\x00" if not body else bytes(
            b ^ (0x80 if i == flip % len(body) else 0) for i, b in enumerate(body))
        with pytest.raises(SignatureMismatchError):
            verify(provider, headers, altered, secret)


@pytest.mark.parametrize(("provider", "delivery_header", "event_header", "event"), [
    ("github", "X-GitHub-Delivery", "X-GitHub-Event", "push"),
    ("gitea", "X-Gitea-Delivery", "X-Gitea-Event", "push"),
    ("gitlab", "X-Gitlab-Event-UUID", "X-Gitlab-Event", "Push Hook"),
    ("bitbucket", "X-Request-UUID", "X-Event-Key", "repo:push"),
])
def test_delivery_id_and_event_name_come_from_the_providers_headers(
    provider: str, delivery_header: str, event_header: str, event: str,
) -> None:
    headers = {delivery_header.lower(): " 72d3162e-cc78-11e3-81ab-4c9367dc0958 ", event_header.upper(): event}
    assert delivery_id(provider, headers) == "72d3162e-cc78-11e3-81ab-4c9367dc0958"
    assert event_name(provider, headers) == event
    assert delivery_id(provider, {}) is None
    assert event_name(provider, {event_header: ""}) is None
