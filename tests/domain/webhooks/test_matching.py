"""Trigger matching (GitHub Actions filter semantics) and repository branch filters."""

from __future__ import annotations

import re
import warnings
from dataclasses import replace

import pytest
from hypothesis import given
from hypothesis import strategies as st

from domain.pipeline_document import Triggers
from domain.webhooks.events import TriggerEvent
from domain.webhooks.matching import (
    branch_filter_allows,
    filter_matches,
    glob_regex,
    matches,
    validate_branch_filter,
    validate_patterns,
)

PUSH = TriggerEvent(provider="github", kind="push", repository="acme/app", ref="refs/heads/main", branch="main",
                    after="a" * 40, changed_paths=["src/app.py", "README.md"])
TAG_PUSH = replace(PUSH, ref="refs/tags/v1.2.0", branch=None, tag="v1.2.0", changed_paths=[])
PR = TriggerEvent(provider="github", kind="pull_request", repository="acme/app", action="opened",
                  source_branch="feature/x", target_branch="main", number=4)
COMMENT = TriggerEvent(provider="github", kind="issue_comment", repository="acme/app", action="created",
                       number=4, comment_body="/deploy staging")
RELEASE = TriggerEvent(provider="github", kind="release", repository="acme/app", action="published",
                       release_tag="v1.2.0", release_action="published")
ISSUE = TriggerEvent(provider="github", kind="issue", repository="acme/app", action="opened", number=9)

# Branch names as git allows them, restricted to characters without glob meaning.
LITERAL = st.text(alphabet=st.characters(codec="ascii", categories=["L", "N"], include_characters="-_./"),
                  min_size=1, max_size=30)
ANY_NAME = st.text(alphabet=st.characters(codec="ascii", categories=["L", "N", "P", "S"]), max_size=30)


# --- patterns -----------------------------------------------------------------------------

@pytest.mark.parametrize(("pattern", "value", "expected"), [
    ("feature/*", "feature/login", True),
    ("feature/*", "feature/a/b", False),
    ("feature/**", "feature/a/b", True),
    ("*", "main", True),
    ("*", "release/1.0", False),
    ("**", "release/1.0", True),
    ("releases/**-alpha", "releases/beta/3-alpha", True),
    ("v1.?", "v1", True),
    ("v1.?", "v1.", True),
    ("v2.+", "v2...", True),
    ("v[12].[0-9]+.[0-9]+", "v2.10.3", True),
    ("v[12].[0-9]+.[0-9]+", "v3.1.0", False),
    ("*.md", "docs/a.md", False),
    ("**.md", "docs/a.md", True),
    ("**/docs/**", "docs/intro.md", True),
    ("**/docs/**", "site/docs/intro.md", True),
    ("docs/**", "src/docs/intro.md", False),
    ("main", "main-2", False),
    ("re.ease", "release", False),
    (r"\*", "*", True),
    (r"\*", "a", False),
    ("[", "[", True),
])
def test_glob_patterns_follow_github_actions_cheat_sheet(pattern: str, value: str, expected: bool) -> None:
    assert filter_matches([pattern], value) is expected


def test_negation_applies_in_order_and_last_match_wins() -> None:
    patterns = ["releases/**", "!releases/**-alpha"]
    assert filter_matches(patterns, "releases/10")
    assert not filter_matches(patterns, "releases/10-alpha")
    assert filter_matches([*patterns, "releases/**-alpha"], "releases/10-alpha")
    assert not filter_matches(["!main"], "develop"), "only negations match nothing"


@given(LITERAL)
def test_a_literal_name_matches_exactly_itself(name: str) -> None:
    assert filter_matches([name], name)
    assert not filter_matches([name], name + "x")
    assert not filter_matches([name], "x" + name)


@given(ANY_NAME)
def test_double_star_matches_everything(name: str) -> None:
    assert filter_matches(["**"], name)


@given(LITERAL, st.lists(LITERAL, max_size=3))
def test_a_negation_after_a_match_excludes(name: str, others: list[str]) -> None:
    assert not filter_matches(["**", *others, f"!{name}"], name)
    assert not filter_matches([name, f"!{name}"], name)
    assert filter_matches([f"!{name}", name], name)


@given(st.text(alphabet=st.sampled_from("ab-/*?+[]!^&|~\\."), max_size=30) | st.text(max_size=30))
def test_any_text_compiles_or_raises_value_error_without_warnings(pattern: str) -> None:
    with warnings.catch_warnings():
        # `re` warns (FutureWarning) on set syntax such as `[[` or `&&`; patterns must not reach it.
        warnings.simplefilter("error")
        try:
            glob_regex.__wrapped__(pattern)
        except ValueError:
            pass


# --- push ---------------------------------------------------------------------------------

def test_a_missing_kind_never_matches_and_an_empty_section_matches_all() -> None:
    assert not matches({}, PUSH)
    assert not matches({"pull_request": {}}, PUSH)
    assert matches({"push": {}}, PUSH)
    assert matches({"push": None}, PUSH)
    assert matches({"push": {}}, TAG_PUSH)


def test_branch_filters() -> None:
    assert matches({"push": {"branches": ["main", "release/*"]}}, PUSH)
    assert matches({"push": {"branches": ["release/*"]}}, replace(PUSH, branch="release/1.0"))
    assert not matches({"push": {"branches": ["release/*"]}}, PUSH)
    assert not matches({"push": {"branches_ignore": ["main"]}}, PUSH)
    assert matches({"push": {"branches_ignore": ["dependabot/**"]}}, PUSH)


def test_only_branch_filters_do_not_match_tag_pushes_and_vice_versa() -> None:
    assert not matches({"push": {"branches": ["**"]}}, TAG_PUSH)
    assert not matches({"push": {"branches_ignore": ["nothing"]}}, TAG_PUSH)
    assert not matches({"push": {"tags": ["**"]}}, PUSH)
    assert not matches({"push": {"tags_ignore": ["nothing"]}}, PUSH)
    assert matches({"push": {"tags": ["v*"]}}, TAG_PUSH)
    assert not matches({"push": {"tags": ["v2.*"]}}, TAG_PUSH)
    assert not matches({"push": {"tags_ignore": ["v1.*"]}}, TAG_PUSH)
    both = {"push": {"branches": ["main"], "tags": ["v*"]}}
    assert matches(both, PUSH) and matches(both, TAG_PUSH)


def test_a_push_that_deletes_a_ref_never_matches() -> None:
    assert not matches({"push": {}}, replace(PUSH, deleted=True))


def test_paths_need_one_matching_changed_path() -> None:
    assert matches({"push": {"paths": ["src/**"]}}, PUSH)
    assert not matches({"push": {"paths": ["docs/**"]}}, PUSH)
    assert not matches({"push": {"paths": ["src/**", "!src/**/*.py"]}}, replace(PUSH, changed_paths=["src/app.py"]))


def test_paths_ignore_skips_only_when_every_changed_path_is_ignored() -> None:
    assert matches({"push": {"paths_ignore": ["**.md"]}}, PUSH)
    assert not matches({"push": {"paths_ignore": ["**.md", "src/**"]}}, PUSH)
    assert not matches({"push": {"paths_ignore": ["docs/**"]}}, replace(PUSH, changed_paths=["docs/a.md"]))


def test_path_filters_are_not_applied_to_tags_or_unknown_changes() -> None:
    assert matches({"push": {"tags": ["v*"], "paths": ["docs/**"]}}, replace(TAG_PUSH, changed_paths=["x"]))
    # Bitbucket pushes list no files: run, as GitHub does when it cannot compute the diff.
    assert matches({"push": {"paths": ["docs/**"]}}, replace(PUSH, changed_paths=[]))


def test_a_triggers_model_is_accepted() -> None:
    triggers = Triggers.model_validate({"push": {"branches": ["main"]}, "pull_request": {"types": ["closed"]}})
    assert matches(triggers, PUSH)
    assert not matches(triggers, PR)


# --- pull requests ------------------------------------------------------------------------

@pytest.mark.parametrize(("action", "expected"), [
    ("opened", True), ("synchronize", True), ("reopened", True), ("closed", False), ("merged", False),
    ("edited", False),
])
def test_pull_request_default_types_are_opened_synchronize_reopened(action: str, expected: bool) -> None:
    assert matches({"pull_request": {}}, replace(PR, action=action)) is expected


def test_pull_request_types_and_closed_covers_merged() -> None:
    assert matches({"pull_request": {"types": ["merged"]}}, replace(PR, action="merged"))
    assert not matches({"pull_request": {"types": ["merged"]}}, replace(PR, action="closed"))
    assert matches({"pull_request": {"types": ["closed"]}}, replace(PR, action="merged"))
    assert not matches({"pull_request": {"types": ["closed"]}}, PR)


def test_pull_request_branches_filter_the_target_branch() -> None:
    assert matches({"pull_request": {"branches": ["main"]}}, PR)
    assert not matches({"pull_request": {"branches": ["feature/*"]}}, PR)
    assert not matches({"pull_request": {"branches_ignore": ["main"]}}, PR)
    assert matches({"pull_request": {"paths": ["src/**"]}}, replace(PR, changed_paths=["src/a.py"]))
    assert not matches({"pull_request": {"paths": ["src/**"]}}, replace(PR, changed_paths=["docs/a.md"]))


# --- comments, issues, releases -----------------------------------------------------------

def test_comment_command_prefix_must_start_the_comment_as_a_word() -> None:
    section = {"issue_comment": {"command_prefix": "/deploy"}}
    assert matches(section, COMMENT)
    assert matches(section, replace(COMMENT, comment_body="  /deploy"))
    assert matches(section, replace(COMMENT, comment_body="/deploy\nproduction"))
    assert not matches(section, replace(COMMENT, comment_body="please /deploy"))
    assert not matches(section, replace(COMMENT, comment_body="/deployment notes"))
    assert not matches(section, replace(COMMENT, comment_body=None))


def test_editing_or_deleting_a_command_comment_does_not_run_it_again() -> None:
    section = {"issue_comment": {"command_prefix": "/deploy"}}
    assert not matches(section, replace(COMMENT, action="edited"))
    assert not matches(section, replace(COMMENT, action="deleted"))
    assert matches({"issue_comment": {"command_prefix": "/deploy", "types": ["edited"]}},
                   replace(COMMENT, action="edited"))
    assert matches({"issue_comment": {}}, replace(COMMENT, action="deleted"))


def test_issue_and_release_types() -> None:
    assert matches({"issue": {}}, ISSUE)
    assert matches({"issue": {"types": ["opened", "labeled"]}}, ISSUE)
    assert not matches({"issue": {"types": ["closed"]}}, ISSUE)
    assert matches({"release": {}}, RELEASE)
    assert matches({"release": {"types": ["published"]}}, RELEASE)
    assert not matches({"release": {"types": ["prereleased"]}}, RELEASE)


def test_malformed_patterns_are_reported_on_save_and_skipped_when_matching() -> None:
    # `[z-a]` is a reversed range: `re` refuses it.
    assert validate_patterns({"push": {"branches": ["main", "!feat/[z-a]"]}}) == [
        "push.branches[1]: invalid pattern 'feat/[z-a]': bad character range z-a at position 6"]
    assert validate_patterns({"push": {"branches": ["main"]}, "schedule": {"cron": "* * * * *"}}) == []
    assert matches({"push": {"branches": ["[z-a]", "main"]}}, PUSH)


# --- repository branch filter -------------------------------------------------------------

@given(filter_type=st.sampled_from(["none"]), pattern=st.one_of(st.none(), st.text()), branch=st.text())
def test_branch_filter_none_allows_every_branch(filter_type: str, pattern: str | None, branch: str) -> None:
    assert branch_filter_allows(filter_type, pattern, branch)


@given(ANY_NAME.filter(bool))
def test_a_regex_from_an_escaped_name_matches_that_name(name: str) -> None:
    validate_branch_filter("regex", re.escape(name))
    assert branch_filter_allows("regex", re.escape(name), name)
    assert not branch_filter_allows("regex", re.escape(name), name + "x")


@given(LITERAL)
def test_exact_and_wildcard_filters_match_a_literal_name(name: str) -> None:
    assert branch_filter_allows("exact", name, name)
    assert branch_filter_allows("wildcard", name, name)
    assert not branch_filter_allows("exact", name, name + "/x")


def test_branch_filter_types() -> None:
    assert branch_filter_allows("exact", "main", "main")
    assert not branch_filter_allows("exact", "main", "main2")
    assert branch_filter_allows("wildcard", "release/*", "release/1.0")
    assert not branch_filter_allows("wildcard", "release/*", "release/1.0/hotfix")
    assert branch_filter_allows("regex", r"release/\d+\.\d+", "release/1.0")
    assert not branch_filter_allows("regex", "main", "maintenance"), "regexes match the whole name"
    assert branch_filter_allows("regex", "main|develop", "develop")


@pytest.mark.parametrize(("filter_type", "pattern", "message"), [
    ("regex", "release/(", "invalid regex"),
    ("regex", "[", "invalid regex"),
    ("regex", "a" * 501, "longer than 500"),
    ("exact", "", "needs a pattern"),
    ("wildcard", None, "needs a pattern"),
    ("wildcard", "[z-a]", "invalid pattern"),
    ("glob", "main", "unknown branch filter type"),
])
def test_invalid_branch_filters_are_refused_on_save_and_allow_nothing(
    filter_type: str, pattern: str | None, message: str,
) -> None:
    with pytest.raises(ValueError, match=message):
        validate_branch_filter(filter_type, pattern)
    assert not branch_filter_allows(filter_type, pattern, "main")


def test_valid_branch_filters_pass_validation() -> None:
    for filter_type, pattern in [("none", None), ("none", ""), ("exact", "main"), ("wildcard", "release/**"),
                                 ("regex", r"^(main|release/.+)$")]:
        validate_branch_filter(filter_type, pattern)
