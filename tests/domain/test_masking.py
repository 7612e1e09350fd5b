"""``Masker`` hides every secret a step could see, in the forms a script is likely to print."""

from __future__ import annotations

import base64
from urllib.parse import quote, quote_plus

import pytest
from hypothesis import given
from hypothesis import strategies as st

from domain.masking import MASK, Masker

SECRET = "p@ss/w0rd+with space?&="


@pytest.mark.parametrize(
    "form",
    [
        SECRET,
        base64.b64encode(SECRET.encode()).decode(),
        base64.b64encode(SECRET.encode()).decode().rstrip("="),
        base64.urlsafe_b64encode(SECRET.encode()).decode(),
        base64.urlsafe_b64encode(SECRET.encode()).decode().rstrip("="),
        quote(SECRET, safe=""),
        quote(SECRET),
        quote_plus(SECRET),
    ],
    ids=["plain", "base64", "base64-unpadded", "urlsafe-base64", "urlsafe-unpadded", "url-encoded",
         "url-encoded-keeping-slash", "quote-plus"],
)
def test_secret_forms_are_masked(form):
    masked = Masker([SECRET]).mask(f"before {form} after")
    assert masked.startswith("before ") and masked.endswith(" after")
    assert MASK in masked
    assert SECRET not in masked and form not in masked


def test_padded_and_unpadded_base64_differ_for_this_secret():
    # guards the parametrization above: the padded form really carries padding
    assert base64.b64encode(SECRET.encode()).decode().endswith("=")


def test_every_occurrence_is_masked():
    assert Masker(["token-123"]).mask("token-123 and token-123!") == "*** and ***!"


def test_multi_line_secret_is_masked_whole_and_line_by_line():
    secret = "-----BEGIN KEY-----\nMIIEvQIBADANBgkq\nhkiG9w0BAQEFAASC\n-----END KEY-----"
    masker = Masker([secret])
    assert masker.mask(f"key: {secret}") == "key: ***"
    printed = [masker.mask(line) for line in secret.splitlines()]
    assert printed == [MASK, MASK, MASK, MASK]


def test_a_secret_containing_another_secret_is_masked_whole():
    masker = Masker(["abc", "xxabcxx"])
    assert masker.mask("[xxabcxx] [abc]") == "[***] [***]"
    assert "xx" not in masker.mask("xxabcxx")


@pytest.mark.parametrize("short", ["", "a", "ab"])
def test_values_shorter_than_three_characters_are_ignored(short):
    masker = Masker([short])
    assert not masker
    text = f"ab a {base64.b64encode(short.encode()).decode()} YWI YQ== ordinary text"
    assert masker.mask(text) == text


def test_three_character_secret_is_masked():
    assert Masker(["abc"]).mask("xabcx") == "x***x"


def test_no_secrets_leaves_text_alone():
    masker = Masker()
    assert not masker
    assert masker.mask("anything") == "anything"
    assert masker.mask_value({"a": ["b"]}) == {"a": ["b"]}


def test_nested_dicts_and_lists_are_masked_and_other_values_kept():
    masker = Masker(["hunter2"])
    value = {"a": "pw=hunter2", "b": [1, "hunter2", {"c": "x hunter2 y", "d": None}], "e": True, "f": 2.5}
    assert masker.mask_value(value) == {"a": "pw=***", "b": [1, "***", {"c": "x *** y", "d": None}],
                                        "e": True, "f": 2.5}
    assert value["a"] == "pw=hunter2", "the input is not modified"


def test_regex_characters_in_secrets_are_literal():
    masker = Masker(["a.*b(c)"])
    assert masker.mask("a.*b(c) axxb(c)") == "*** axxb(c)"


# Secrets are drawn without "*": a secret made of asterisks would "appear" in the mask itself.
secrets = st.text(st.characters(exclude_categories=("Cs",), exclude_characters="*"), min_size=3)
texts = st.text(st.characters(exclude_categories=("Cs",)))


@given(secret=secrets, before=texts, after=texts)
def test_property_an_embedded_secret_never_survives_masking(secret, before, after):
    masked = Masker([secret]).mask(before + secret + after)
    assert secret not in masked


@given(secret=secrets, other=secrets, text=texts)
def test_property_several_embedded_secrets_never_survive_masking(secret, other, text):
    masked = Masker([secret, other]).mask(text + secret + text + other + text)
    assert secret not in masked and other not in masked
