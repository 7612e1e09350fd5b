"""Semantic versions of pipeline templates (``services.templates``): what is accepted and how
versions are ordered (semver.org 2.0.0, section 11)."""

from __future__ import annotations

import random

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic_core import PydanticCustomError

from services.templates import check_semver, semver_key

# The precedence example of semver.org, lowest first.
SPEC_ORDER = ["1.0.0-alpha", "1.0.0-alpha.1", "1.0.0-alpha.beta", "1.0.0-beta", "1.0.0-beta.2", "1.0.0-beta.11",
              "1.0.0-rc.1", "1.0.0", "1.0.1", "1.1.0", "1.10.0", "2.0.0-0", "2.0.0"]

numbers = st.integers(min_value=0, max_value=10_000)
identifiers = st.one_of(numbers.map(str), st.from_regex(r"[0-9]*[A-Za-z-][0-9A-Za-z-]{0,5}", fullmatch=True))
releases = st.tuples(numbers, numbers, numbers).map(lambda t: "{}.{}.{}".format(*t))
versions = st.one_of(releases, st.tuples(releases, st.lists(identifiers, min_size=1, max_size=4))
                     .map(lambda t: f"{t[0]}-{'.'.join(t[1])}")).filter(lambda v: len(v) <= 50)


def test_the_spec_example_sorts_in_spec_order():
    shuffled = SPEC_ORDER[:]
    random.Random(7).shuffle(shuffled)
    assert sorted(shuffled, key=semver_key) == SPEC_ORDER


@pytest.mark.parametrize("text", ["1.0", "1.0.0.0", "01.0.0", "1.00.0", "1.0.0-", "1.0.0-01", "v1.0.0",
                                  "1.0.0+build", "1.0.0-rc..1", "1.0.0-rc_1", " 1.0.0", "", "1.0.0-é",
                                  "1.0.0\n", "١.0.0"])
def test_malformed_versions_are_refused_with_a_message_naming_them(text):
    with pytest.raises(ValueError):
        semver_key(text)
    with pytest.raises(PydanticCustomError) as caught:
        check_semver(text)
    assert f"'{text}' is not a semantic version" in caught.value.message()


@given(versions)
def test_every_well_formed_version_is_accepted(version):
    assert check_semver(version) == version


@given(numbers, numbers, numbers, numbers, numbers, numbers)
def test_releases_order_by_their_numbers(a, b, c, x, y, z):
    left, right = semver_key(f"{a}.{b}.{c}"), semver_key(f"{x}.{y}.{z}")
    assert (left < right) == ((a, b, c) < (x, y, z))
    assert (left == right) == ((a, b, c) == (x, y, z))


@given(releases, st.lists(identifiers, min_size=1, max_size=4))
def test_a_pre_release_ranks_below_its_release_and_above_the_previous_patch(release, pre):
    candidate = f"{release}-{'.'.join(pre)}"
    if len(candidate) > 50:
        return
    assert semver_key(candidate) < semver_key(release)
    major, minor, patch = map(int, release.split("."))
    if patch:
        assert semver_key(f"{major}.{minor}.{patch - 1}") < semver_key(candidate)


@given(versions, versions)
def test_equal_keys_mean_equal_versions(left, right):
    assert (semver_key(left) == semver_key(right)) == (left == right)
