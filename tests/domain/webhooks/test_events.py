"""Normalising each provider's documented webhook payloads into one TriggerEvent."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from domain.webhooks.events import PayloadError, TriggerEvent, normalize, normalize_all
from domain.webhooks.signatures import UnknownProviderError, WebhookError

PAYLOADS = Path(__file__).parent / "payloads"


def load(name: str) -> dict[str, Any]:
    return json.loads((PAYLOADS / f"{name}.json").read_text())


def one(provider: str, event: str, payload: dict[str, Any]) -> TriggerEvent:
    result = normalize(provider, event, payload)
    assert result is not None
    return result


# --- GitHub -------------------------------------------------------------------------------

def test_github_push_carries_branch_commits_and_the_union_of_changed_paths() -> None:
    event = one("github", "push", load("github_push"))
    assert (event.provider, event.kind, event.repository) == ("github", "push", "Codertocat/Hello-World")
    assert (event.ref, event.branch, event.tag) == ("refs/heads/main", "main", None)
    assert event.before == "6113728f27ae82c7b1a177c8d03f9e96e0adf246"
    assert event.after == event.sha == "0000000000000000000000000000000000000001"
    assert event.commits == [
        {"id": "0000000000000000000000000000000000000002", "message": "Update README.md", "author": "Codertocat"},
        {"id": "0000000000000000000000000000000000000001", "message": "Remove old config", "author": "Codertocat"},
    ]
    assert event.changed_paths == ["docs/intro.md", "README.md", "config/old.yml"]
    assert event.author == "Codertocat" and not event.deleted


def test_github_tag_push_has_a_tag_and_no_branch() -> None:
    event = one("github", "push", load("github_push_tag"))
    assert (event.branch, event.tag, event.commits) == (None, "v1.2.0", [])


def test_github_branch_deletion_is_marked_deleted() -> None:
    payload = load("github_push") | {"deleted": True, "after": "0" * 40, "commits": []}
    assert one("github", "push", payload).deleted


def test_github_pull_request_from_a_fork() -> None:
    event = one("github", "pull_request", load("github_pull_request_opened"))
    assert (event.kind, event.action, event.number) == ("pull_request", "opened", 2)
    assert (event.source_branch, event.target_branch) == ("changes", "main")
    assert event.from_fork is True
    assert event.sha == "ec26c3e57ca3a959ca5aad62de7213c562f8c821"
    assert event.author == "Octocatfan" and event.url == "https://github.com/Codertocat/Hello-World/pull/2"


def test_github_pull_request_closed_with_merged_true_is_merged() -> None:
    payload = load("github_pull_request_closed")
    event = one("github", "pull_request", payload)
    assert event.action == "merged" and event.from_fork is False
    payload["pull_request"]["merged"] = False
    assert one("github", "pull_request", payload).action == "closed"


@pytest.mark.parametrize("action", ["synchronize", "reopened", "edited", "labeled"])
def test_github_pull_request_actions_pass_through(action: str) -> None:
    payload = load("github_pull_request_opened") | {"action": action}
    assert one("github", "pull_request", payload).action == action


def test_github_pull_request_whose_fork_was_deleted_counts_as_a_fork() -> None:
    payload = load("github_pull_request_closed")
    payload["pull_request"]["head"]["repo"] = None
    assert one("github", "pull_request", payload).from_fork is True


def test_github_issue_comment_and_release() -> None:
    issue = one("github", "issues", load("github_issues_opened"))
    assert (issue.kind, issue.action, issue.number, issue.title) == (
        "issue", "opened", 1, "Spelling error in the README file")
    comment = one("github", "issue_comment", load("github_issue_comment_created"))
    assert (comment.kind, comment.action, comment.number) == ("issue_comment", "created", 2)
    assert comment.comment_body == "/deploy staging" and comment.author == "Codertocat"
    release = one("github", "release", load("github_release_published"))
    assert (release.kind, release.release_tag, release.release_action) == ("release", "0.0.1", "published")


@pytest.mark.parametrize("event", ["ping", "star", "workflow_run", "check_suite"])
def test_github_events_we_do_not_act_on_are_ignored(event: str) -> None:
    assert normalize("github", event, load("github_ping")) is None


# --- GitLab -------------------------------------------------------------------------------

def test_gitlab_push_hook() -> None:
    event = one("gitlab", "Push Hook", load("gitlab_push_hook"))
    assert (event.kind, event.repository, event.branch) == ("push", "mike/diaspora", "master")
    assert event.sha == "da1560886d4f094c3e6c9ef40349f7d38b5d27d7"
    assert [c["id"][:7] for c in event.commits] == ["b6568db", "da15608"]
    assert event.commits[0]["author"] == "Jordi Mallach"
    assert event.changed_paths == ["CHANGELOG", "app/controller/application.rb", "docs/old.md"]
    assert event.author == "jsmith"


def test_gitlab_tag_push_hook() -> None:
    event = one("gitlab", "Tag Push Hook", load("gitlab_tag_push_hook"))
    assert (event.kind, event.tag, event.branch) == ("push", "v1.0.0", None)


def test_gitlab_tag_deletion_is_marked_deleted() -> None:
    payload = load("gitlab_tag_push_hook") | {"after": "0" * 40, "checkout_sha": None}
    assert one("gitlab", "Tag Push Hook", payload).deleted


@pytest.mark.parametrize(("gitlab_action", "oldrev", "action"), [
    ("open", None, "opened"), ("close", None, "closed"), ("merge", None, "merged"),
    ("reopen", None, "reopened"), ("update", "95790bf891e76fee5e1747ab589903a6a1f80f22", "synchronize"),
    ("update", None, "edited"), ("approved", None, "approved"),
])
def test_gitlab_merge_request_actions_map_to_pull_request_actions(
    gitlab_action: str, oldrev: str | None, action: str,
) -> None:
    payload = load("gitlab_merge_request_hook")
    payload["object_attributes"] |= {"action": gitlab_action, "oldrev": oldrev}
    assert one("gitlab", "Merge Request Hook", payload).action == action


def test_gitlab_merge_request_hook() -> None:
    event = one("gitlab", "Merge Request Hook", load("gitlab_merge_request_hook"))
    assert (event.kind, event.number, event.title) == ("pull_request", 1, "MS-Viewport")
    assert (event.source_branch, event.target_branch) == ("ms-viewport", "master")
    # source_project_id 14 != target_project_id 1: the source branch lives in a fork.
    assert event.from_fork is True
    assert event.repository == "gitlabhq/gitlab-test"


def test_gitlab_merge_request_within_the_project_is_not_from_a_fork() -> None:
    payload = load("gitlab_merge_request_hook")
    payload["object_attributes"]["source_project_id"] = 1
    assert one("gitlab", "Merge Request Hook", payload).from_fork is False


def test_gitlab_issue_note_and_release_hooks() -> None:
    issue = one("gitlab", "Issue Hook", load("gitlab_issue_hook"))
    assert (issue.kind, issue.action, issue.number) == ("issue", "opened", 23)
    note = one("gitlab", "Note Hook", load("gitlab_note_hook"))
    assert (note.kind, note.action, note.number) == ("issue_comment", "created", 1)
    assert note.comment_body == "/deploy production"
    release = one("gitlab", "Release Hook", load("gitlab_release_hook"))
    assert (release.kind, release.release_tag, release.release_action) == ("release", "v1.1", "published")


@pytest.mark.parametrize("event", ["Pipeline Hook", "Job Hook", "Wiki Page Hook", "System Hook"])
def test_gitlab_events_we_do_not_act_on_are_ignored(event: str) -> None:
    assert normalize("gitlab", event, load("gitlab_push_hook")) is None


# --- Gitea --------------------------------------------------------------------------------

def test_gitea_push() -> None:
    event = one("gitea", "push", load("gitea_push"))
    assert (event.kind, event.repository, event.branch) == ("push", "gitea/webhooks", "develop")
    assert event.changed_paths == ["src/hooks.go", "README.md"]
    assert event.commits == [{"id": "bffeb74224043ba2feb48d137756c8a9331c449a", "message": "Webhooks Yay!",
                              "author": "gitea"}]
    assert event.url and event.url.startswith("http://localhost:3000/gitea/webhooks/compare/")


def test_gitea_pull_request_synchronized_is_synchronize() -> None:
    event = one("gitea", "pull_request", load("gitea_pull_request"))
    assert (event.action, event.number, event.from_fork) == ("synchronize", 7, False)
    assert (event.source_branch, event.target_branch) == ("feature/retries", "master")


def test_gitea_pull_request_sync_event_name_is_synchronize() -> None:
    payload = load("gitea_pull_request") | {"action": "opened"}
    assert one("gitea", "pull_request_sync", payload).action == "synchronize"


def test_gitea_issue_comment_and_release() -> None:
    assert one("gitea", "issues", load("gitea_issues")).number == 9
    comment = one("gitea", "issue_comment", load("gitea_issue_comment"))
    assert (comment.kind, comment.comment_body, comment.author) == ("issue_comment", "/deploy staging", "gitea")
    release = one("gitea", "release", load("gitea_release"))
    assert (release.release_tag, release.release_action) == ("v2.0.0", "published")


# --- Bitbucket Cloud ----------------------------------------------------------------------

def test_bitbucket_push_yields_one_event_per_changed_ref_without_paths() -> None:
    branch, tag = normalize_all("bitbucket", "repo:push", load("bitbucket_repo_push"))
    assert (branch.kind, branch.repository, branch.branch, branch.tag) == (
        "push", "teamsinspace/widgets", "feature/login", None)
    assert branch.before == "1e65c05c1d5171631d92438a13901ca7dae9618c"
    assert branch.sha == "709d658dc5b6d6afcd46049c2f332ee3f515a67d"
    assert branch.commits == [{"id": "709d658dc5b6d6afcd46049c2f332ee3f515a67d", "message": "Add login form\n",
                               "author": "Emma Stone"}]
    # Bitbucket Cloud push payloads carry no file lists.
    assert branch.changed_paths == []
    assert (tag.ref, tag.branch, tag.tag, tag.before) == ("refs/tags/v0.9.0", None, "v0.9.0", None)
    assert normalize("bitbucket", "repo:push", load("bitbucket_repo_push")) == branch


def test_bitbucket_branch_deletion_is_marked_deleted() -> None:
    payload = load("bitbucket_repo_push")
    change = payload["push"]["changes"][0]
    change["new"], change["closed"] = None, True
    event = normalize_all("bitbucket", "repo:push", payload)[0]
    assert event.deleted and event.branch == "feature/login" and event.after is None


@pytest.mark.parametrize(("key", "action"), [
    ("pullrequest:created", "opened"), ("pullrequest:updated", "synchronize"),
    ("pullrequest:fulfilled", "merged"), ("pullrequest:rejected", "closed"),
])
def test_bitbucket_pull_request_events_map_to_actions(key: str, action: str) -> None:
    event = one("bitbucket", key, load("bitbucket_pullrequest_created"))
    assert (event.kind, event.action, event.number) == ("pull_request", action, 17)
    assert (event.source_branch, event.target_branch, event.from_fork) == ("fix-typo", "main", True)


def test_bitbucket_merged_pull_request_within_the_repository() -> None:
    event = one("bitbucket", "pullrequest:fulfilled", load("bitbucket_pullrequest_fulfilled"))
    assert (event.action, event.from_fork, event.source_branch) == ("merged", False, "release/1.0")


def test_bitbucket_comment_and_issue() -> None:
    comment = one("bitbucket", "pullrequest:comment_created", load("bitbucket_pullrequest_comment_created"))
    assert (comment.kind, comment.number, comment.comment_body) == ("issue_comment", 17, "/deploy staging")
    issue = one("bitbucket", "issue:created", load("bitbucket_issue_created"))
    assert (issue.kind, issue.action, issue.number, issue.author) == ("issue", "opened", 4, "emma")


@pytest.mark.parametrize("key", ["repo:fork", "repo:commit_status_created", "pullrequest:approved"])
def test_bitbucket_events_we_do_not_act_on_are_ignored(key: str) -> None:
    assert normalize("bitbucket", key, load("bitbucket_repo_push")) is None


# --- errors and context -------------------------------------------------------------------

@pytest.mark.parametrize(("provider", "event", "fixture", "remove", "named"), [
    ("github", "push", "github_push", ("repository", "full_name"), "repository.full_name"),
    ("github", "push", "github_push", ("ref",), "'ref'"),
    ("github", "pull_request", "github_pull_request_opened", ("pull_request", "base"), "base.ref"),
    ("github", "issue_comment", "github_issue_comment_created", ("comment", "body"), "comment.body"),
    ("github", "release", "github_release_published", ("release", "tag_name"), "tag_name"),
    ("gitlab", "Push Hook", "gitlab_push_hook", ("project",), "project.path_with_namespace"),
    ("gitlab", "Merge Request Hook", "gitlab_merge_request_hook", ("object_attributes", "target_branch"),
     "target_branch"),
    ("gitlab", "Note Hook", "gitlab_note_hook", ("object_attributes", "note"), "note"),
    ("gitea", "pull_request", "gitea_pull_request", ("pull_request", "head"), "head.ref"),
    ("bitbucket", "repo:push", "bitbucket_repo_push", ("push",), "push.changes"),
    ("bitbucket", "pullrequest:created", "bitbucket_pullrequest_created", ("pullrequest", "destination"),
     "destination.branch.name"),
])
def test_a_payload_missing_a_needed_field_names_it(
    provider: str, event: str, fixture: str, remove: tuple[str, ...], named: str,
) -> None:
    payload = load(fixture)
    parent = payload
    for key in remove[:-1]:
        parent = parent[key]
    del parent[remove[-1]]
    with pytest.raises(PayloadError, match=named.replace(".", r"\.")):
        normalize(provider, event, payload)


@pytest.mark.parametrize("payload", [[], "push", None, 3])
def test_a_body_that_is_not_an_object_is_a_payload_error(payload: Any) -> None:
    with pytest.raises(PayloadError, match="not a JSON object"):
        normalize("github", "push", payload)


def test_a_field_of_the_wrong_type_is_a_payload_error() -> None:
    payload = load("github_pull_request_opened") | {"pull_request": "not an object"}
    with pytest.raises(PayloadError):
        normalize("github", "pull_request", payload)
    with pytest.raises(PayloadError):
        normalize("github", "push", load("github_push") | {"commits": "abc"})


def test_a_missing_event_name_or_unknown_provider_is_refused() -> None:
    with pytest.raises(PayloadError):
        normalize("github", None, load("github_push"))
    with pytest.raises(UnknownProviderError):
        normalize("svn", "push", load("github_push"))


def test_as_context_is_a_json_ready_copy_of_every_field() -> None:
    event = one("github", "push", load("github_push"))
    context = event.as_context()
    assert json.loads(json.dumps(context)) == context
    assert context["branch"] == "main" and context["kind"] == "push"
    assert set(context) >= {"provider", "kind", "action", "repository", "ref", "branch", "tag", "before", "after",
                            "sha", "commits", "changed_paths", "source_branch", "target_branch", "from_fork",
                            "number", "title", "author", "comment_body", "release_tag", "release_action", "url"}
    context["commits"].clear()
    assert event.commits, "the context is a copy; mutating it leaves the event intact"


# --- commits of pull request events (issue 11 item 7) -------------------------------------

def test_github_synchronize_carries_before_and_after_and_sha_is_the_new_head() -> None:
    before, after = "a" * 40, "b" * 40
    payload = load("github_pull_request_opened") | {"action": "synchronize", "before": before, "after": after}
    payload["pull_request"]["head"]["sha"] = after
    event = one("github", "pull_request", payload)
    assert (event.before, event.after, event.sha, event.head_sha) == (before, after, after, after)
    assert event.merge_commit_sha is None


def test_an_open_pull_request_has_no_before_and_after_is_its_head() -> None:
    event = one("github", "pull_request", load("github_pull_request_opened"))
    assert (event.before, event.after) == (None, "ec26c3e57ca3a959ca5aad62de7213c562f8c821")
    # GitHub's merge_commit_sha of an open pull request is a test merge, not a landed commit
    payload = load("github_pull_request_opened")
    payload["pull_request"]["merge_commit_sha"] = "c" * 40
    assert one("github", "pull_request", payload).merge_commit_sha is None


def test_a_merged_github_pull_request_runs_on_its_merge_commit() -> None:
    event = one("github", "pull_request", load("github_pull_request_closed"))
    assert event.action == "merged"
    assert event.merge_commit_sha == event.sha == "c4295bd74fb0f4fda03689c3df3f2803b658fd85"
    assert event.head_sha == event.after == "34c5c7793cb3b279e22454cb6750c80560547b3a"


def test_gitea_synchronized_reads_before_and_after_when_present() -> None:
    payload = load("gitea_pull_request") | {"before": "1" * 40, "after": "2" * 40}
    event = one("gitea", "pull_request", payload)
    assert (event.action, event.before, event.after) == ("synchronize", "1" * 40, "2" * 40)
    bare = one("gitea", "pull_request", load("gitea_pull_request"))
    assert (bare.before, bare.after) == (None, "7c8fd0a34b5e3d2b8d0d4b1f1a3e9e2b7c6f5a41")


def test_gitlab_merge_request_update_with_new_commits_has_oldrev_as_before() -> None:
    event = one("gitlab", "Merge Request Hook", load("gitlab_merge_request_hook"))
    assert event.action == "synchronize"
    assert event.before == "95790bf891e76fee5e1747ab589903a6a1f80f22"
    assert event.after == event.sha == event.head_sha == "da1560886d4f094c3e6c9ef40349f7d38b5d27d7"


def test_a_merged_gitlab_merge_request_runs_on_its_merge_commit_or_its_head() -> None:
    payload = load("gitlab_merge_request_hook")
    payload["object_attributes"] |= {"action": "merge", "oldrev": None, "merge_commit_sha": "e" * 40}
    event = one("gitlab", "Merge Request Hook", payload)
    assert (event.action, event.sha, event.merge_commit_sha, event.before) == ("merged", "e" * 40, "e" * 40, None)
    payload["object_attributes"]["merge_commit_sha"] = None  # a fast-forward merge makes no merge commit
    event = one("gitlab", "Merge Request Hook", payload)
    assert (event.sha, event.merge_commit_sha) == ("da1560886d4f094c3e6c9ef40349f7d38b5d27d7", None)


def test_bitbucket_pull_requests_keep_the_short_hashes_for_the_dispatch_to_expand() -> None:
    opened = one("bitbucket", "pullrequest:created", load("bitbucket_pullrequest_created"))
    assert (opened.sha, opened.head_sha, opened.after, opened.before) == ("d3022fc0ca3d",) * 3 + (None,)
    merged = one("bitbucket", "pullrequest:fulfilled", load("bitbucket_pullrequest_fulfilled"))
    assert (merged.sha, merged.merge_commit_sha, merged.head_sha) == ("764413d85e29", "764413d85e29", "709d658dc5b6")


FIXTURES = [
    ("github", "push", "github_push"), ("github", "pull_request", "github_pull_request_opened"),
    ("github", "issue_comment", "github_issue_comment_created"), ("gitlab", "Push Hook", "gitlab_push_hook"),
    ("gitlab", "Merge Request Hook", "gitlab_merge_request_hook"), ("gitea", "push", "gitea_push"),
    ("bitbucket", "repo:push", "bitbucket_repo_push"),
    ("bitbucket", "pullrequest:created", "bitbucket_pullrequest_created"),
]
JSON = st.recursive(st.none() | st.booleans() | st.integers() | st.text(max_size=5),
                    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3),
                    max_leaves=8)


@given(case=st.sampled_from(FIXTURES), data=st.data())
def test_mangled_payloads_normalise_or_raise_payload_error_never_anything_else(case: tuple[str, str, str],
                                                                                data: st.DataObject) -> None:
    provider, event, fixture = case
    payload = copy.deepcopy(load(fixture))
    # Replace one top-level or second-level value with arbitrary JSON.
    parent = payload
    key = data.draw(st.sampled_from(sorted(parent)))
    if isinstance(parent[key], dict) and parent[key] and data.draw(st.booleans()):
        parent = parent[key]
        key = data.draw(st.sampled_from(sorted(parent)))
    parent[key] = data.draw(JSON)
    try:
        normalize_all(provider, event, payload)
    except WebhookError:
        pass
