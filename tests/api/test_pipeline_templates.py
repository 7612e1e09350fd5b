"""The pipeline templates routes and marketplace: lifecycle, versions, visibility and isolation,
installs and ratings (exact under concurrency), and 422s that name the field and change nothing."""

from __future__ import annotations

import uuid
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import pytest
from sqlalchemy import select

from db.models import Pipeline, PipelineTemplateVersion, Schedule
from domain.pipeline_document import PipelineDocument, normalized
from tests.harness import wait_run


def document(name: str = "from-template", command: str = "true", **fields: Any) -> dict[str, Any]:
    return {"name": name, "steps": [{"id": "a", "type": "run_tests", "with": {"command": command}}], **fields}


def create(client: httpx.Client, name: str | None = None, **fields: Any) -> dict[str, Any]:
    response = client.post("/pipeline_templates", json={"name": name or f"tpl {uuid.uuid4().hex[:8]}", **fields})
    assert response.status_code == 201, response.text
    return response.json()


def add_version(client: httpx.Client, template_id: int, version: str, doc: dict[str, Any] | None = None,
                **fields: Any) -> dict[str, Any]:
    response = client.post(f"/pipeline_templates/{template_id}/versions",
                           json={"version": version, "document": doc or document(), **fields})
    assert response.status_code == 201, response.text
    return response.json()


def publish(client: httpx.Client, template_id: int, version: str | None = None) -> dict[str, Any]:
    response = client.post(f"/pipeline_templates/{template_id}/publish",
                           json={"version": version} if version else None)
    assert response.status_code == 200, response.text
    return response.json()


def published(client: httpx.Client, doc: dict[str, Any] | None = None, **fields: Any) -> dict[str, Any]:
    """A template (public unless told) with version 1.0.0, published."""
    fields = {"is_public": True, **fields}
    template = create(client, initial_version={"version": "1.0.0", "document": doc or document()}, **fields)
    return publish(client, template["id"])


def install(client: httpx.Client, template_id: int, **body: Any) -> dict[str, Any]:
    response = client.post(f"/pipeline_templates/{template_id}/install", json=body or None)
    assert response.status_code == 201, response.text
    return response.json()


def rate(client: httpx.Client, template_id: int, rating: int, review: str = "") -> dict[str, Any]:
    response = client.post(f"/pipeline_templates/{template_id}/rate", json={"rating": rating, "review": review})
    assert response.status_code == 200, response.text
    return response.json()


def show(client: httpx.Client, template_id: int) -> dict[str, Any]:
    response = client.get(f"/pipeline_templates/{template_id}")
    assert response.status_code == 200, response.text
    return response.json()


def market(client: httpx.Client, **params: Any) -> dict[str, Any]:
    response = client.get("/pipeline_templates/marketplace", params=params)
    assert response.status_code == 200, response.text
    return response.json()


def market_ids(client: httpx.Client, **params: Any) -> list[int]:
    return [t["id"] for t in market(client, **params)["data"]]


def tag() -> str:
    """A word no other test uses: the marketplace spans every account of the database."""
    return f"zq{uuid.uuid4().hex[:10]}"


# ---- lifecycle -----------------------------------------------------------------------------


def test_full_lifecycle_from_draft_to_install_and_ratings(stack):
    owner = stack.account()
    word = tag()
    v1 = document(f"deploy-{word}", env={"STAGE": "prod"}, description="ships it",
                  inputs={"target": {"type": "choice", "options": ["a", "b"], "default": "a"}})
    created = create(owner.client, f"Deploy {word}", description="ship safely", category="deploy",
                     difficulty="intermediate")
    assert (created["slug"], created["status"], created["is_public"], created["is_owner"]) == (
        f"deploy-{word}", "draft", False, True)
    assert (created["versions"], created["latest_version"], created["published_version"]) == ([], None, None)
    tid = created["id"]

    first = add_version(owner.client, tid, "1.0.0", v1, changelog="first")
    assert (first["version"], first["published"], first["published_at"], first["document"]) == ("1.0.0", False, None, v1)
    assert owner.client.patch(f"/pipeline_templates/{tid}", json={"is_public": True}).status_code == 200
    other = stack.account()
    assert other.client.get(f"/pipeline_templates/{tid}").status_code == 404  # public but still a draft
    assert tid not in market_ids(other.client, q=word)

    shown = publish(owner.client, tid, "1.0.0")
    assert (shown["status"], shown["published_version"]) == ("published", "1.0.0")
    add_version(owner.client, tid, "1.1.0-rc.1", document(f"deploy-{word}", command="false"))
    owned = show(owner.client, tid)
    assert [(v["version"], v["published"]) for v in owned["versions"]] == [("1.1.0-rc.1", False), ("1.0.0", True)]
    assert (owned["latest_version"], owned["published_version"]) == ("1.1.0-rc.1", "1.0.0")

    listed = market(other.client, q=word)
    assert listed["count"] == 1
    [entry] = listed["data"]
    assert (entry["id"], entry["is_owner"], entry["versions"]) == (tid, False, None)
    assert (entry["latest_version"], entry["published_version"], entry["installation_count"]) == ("1.0.0", "1.0.0", 0)
    seen = show(other.client, tid)
    assert [v["version"] for v in seen["versions"]] == ["1.0.0"]  # drafts stay the owner's

    pipeline = install(other.client, tid)
    assert (pipeline["name"], pipeline["slug"]) == (f"deploy-{word}", f"deploy-{word}")
    assert other.client.get("/pipelines").json()["count"] == 1
    exported = other.client.get(f"/pipelines/{pipeline['id']}/export", params={"format": "json"}).json()
    assert exported == normalized(PipelineDocument.model_validate(v1))
    with stack.sessions() as session:
        origin = session.scalar(select(Pipeline.template_version_id).where(Pipeline.id == pipeline["id"]))
        version_id = session.scalar(select(PipelineTemplateVersion.id).where(
            PipelineTemplateVersion.template_id == tid, PipelineTemplateVersion.version == "1.0.0"))
    assert origin == version_id == pipeline["template_version_id"]
    assert show(owner.client, tid)["installation_count"] == 1

    third = stack.account()
    assert rate(other.client, tid, 4, "good")["rating_count"] == 1
    rated = rate(third.client, tid, 5)
    assert (rated["rating_average"], rated["rating_count"], rated["my_rating"]) == (4.5, 2, 5)
    again = rate(other.client, tid, 2, "broke on upgrade")
    assert (again["rating_average"], again["rating_count"], again["my_rating"]) == (3.5, 2, 2)
    ratings = other.client.get(f"/pipeline_templates/{tid}/ratings").json()
    assert ratings["count"] == 2
    assert [(r["rating"], r["review"], r["is_mine"]) for r in ratings["data"]] == [
        (2, "broke on upgrade", True), (5, "", False)]
    assert "account" not in str(ratings)  # raters stay anonymous
    assert market(third.client, q=word)["data"][0]["rating_average"] == 3.5


def test_an_installed_pipeline_runs_to_success(stack):
    owner, user = stack.account(), stack.account()
    template = published(owner.client, {
        "name": "greet", "inputs": {"who": {"type": "string", "default": "world"}},
        "steps": [
            {"id": "hello", "type": "run_tests",
             "with": {"command": 'echo "greeting=hello $WHO" >> "$DEVOPS_OUTPUT"', "env": {"WHO": "${{ inputs.who }}"}}},
            {"id": "check", "type": "run_tests",
             "with": {"command": 'test "$G" = "hello world"', "env": {"G": "${{ steps.hello.outputs.greeting }}"}}},
        ],
    })
    pipeline = install(user.client, template["id"], name="Greeter")
    assert (pipeline["name"], pipeline["slug"]) == ("Greeter", "greeter")
    run = user.client.post(f"/pipelines/{pipeline['id']}/trigger", json={})
    assert run.status_code == 201, run.text
    done = wait_run(user.client, run.json()["id"])
    assert done["status"] == "success", done
    assert [(s["step_id"], s["status"]) for s in done["steps"]] == [("hello", "success"), ("check", "success")]
    assert done["steps"][0]["outputs"] == {"greeting": "hello world"}


def test_an_installed_schedule_trigger_gets_its_schedule_like_a_created_pipeline(stack):
    owner, user = stack.account(), stack.account()
    tid = published(owner.client, document("nightly", triggers={"schedule": {"cron": "0 3 * * *"}}))["id"]
    pipeline = install(user.client, tid)
    with stack.sessions() as session:
        rows = session.scalars(select(Schedule).where(Schedule.pipeline_id == pipeline["id"])).all()
    assert [(r.account_id, r.cron, r.source) for r in rows] == [(user.id, "0 3 * * *", "document")]


def test_owner_lists_own_templates_with_filters(stack):
    client = stack.account().client
    a = create(client, "alpha", category="security")
    b = published(client, category="docs", difficulty="expert")
    c = create(client, "gamma", category="security", difficulty="advanced")
    stack.account().client.post("/pipeline_templates", json={"name": "not mine"})
    assert [t["id"] for t in client.get("/pipeline_templates").json()["data"]] == [a["id"], b["id"], c["id"]]
    assert [t["id"] for t in client.get("/pipeline_templates", params={"category": "security"}).json()["data"]] == [
        a["id"], c["id"]]
    assert [t["id"] for t in client.get("/pipeline_templates", params={"status": "published"}).json()["data"]] == [
        b["id"]]
    assert [t["id"] for t in client.get("/pipeline_templates", params={"difficulty": "advanced"}).json()["data"]] == [
        c["id"]]
    paged = client.get("/pipeline_templates", params={"limit": 1, "offset": 1}).json()
    assert (paged["count"], [t["id"] for t in paged["data"]]) == (3, [b["id"]])


def test_slugs_are_derived_unique_per_account_and_clash_with_409(stack):
    client = stack.account().client
    first = create(client, "Build & Test")
    assert first["slug"] == "build-test"
    clash = client.post("/pipeline_templates", json={"name": "build test"})
    assert clash.status_code == 409
    [error] = clash.json()["detail"]
    assert error["loc"] == ["body", "slug"] and "slug 'build-test' is already used" in error["msg"]
    second = create(client, "Build & Test", slug="build-test-2")
    patched = client.patch(f"/pipeline_templates/{second['id']}", json={"slug": "build-test"})
    assert patched.status_code == 409 and patched.json()["detail"][0]["loc"] == ["body", "slug"]
    assert show(client, second["id"])["slug"] == "build-test-2"
    assert create(stack.account().client, "Build & Test")["slug"] == "build-test"  # another account


def test_patch_changes_metadata_only(stack):
    client = stack.account().client
    template = published(client, category="review")
    response = client.patch(f"/pipeline_templates/{template['id']}", json={
        "name": "Renamed", "description": "now documented", "category": "docs", "difficulty": "expert",
        "is_public": False})
    assert response.status_code == 200, response.text
    body = response.json()
    assert (body["name"], body["slug"], body["description"], body["category"], body["difficulty"], body["is_public"]) \
        == ("Renamed", template["slug"], "now documented", "docs", "expert", False)
    assert (body["status"], body["versions"]) == ("published", template["versions"])


def test_delete_removes_the_template_but_not_installed_pipelines(stack):
    owner, user = stack.account(), stack.account()
    template = published(owner.client)
    pipeline = install(user.client, template["id"])
    rate(user.client, template["id"], 3)
    assert owner.client.delete(f"/pipeline_templates/{template['id']}").status_code == 204
    assert owner.client.get(f"/pipeline_templates/{template['id']}").status_code == 404
    assert owner.client.delete(f"/pipeline_templates/{template['id']}").status_code == 404
    assert user.client.get(f"/pipelines/{pipeline['id']}").status_code == 200


# ---- versions and publishing ---------------------------------------------------------------


def test_a_published_version_is_immutable_and_a_draft_is_editable(stack):
    client = stack.account().client
    template = published(client)
    tid = template["id"]
    refused = client.put(f"/pipeline_templates/{tid}/versions/1.0.0", json={"document": document("changed")})
    assert refused.status_code == 409
    assert "version 1.0.0 is published and cannot be changed" in refused.json()["detail"]
    assert client.get(f"/pipeline_templates/{tid}/versions/1.0.0").json() == template["versions"][0]

    add_version(client, tid, "1.1.0", document("draft"))
    edited = client.put(f"/pipeline_templates/{tid}/versions/1.1.0",
                        json={"document": document("edited"), "changelog": "fixed"})
    assert edited.status_code == 200, edited.text
    assert (edited.json()["document"]["name"], edited.json()["changelog"]) == ("edited", "fixed")
    publish(client, tid, "1.1.0")
    assert client.put(f"/pipeline_templates/{tid}/versions/1.1.0", json={"document": document()}).status_code == 409
    assert client.put(f"/pipeline_templates/{tid}/versions/9.9.9", json={"document": document()}).status_code == 404


@pytest.mark.parametrize(("existing", "new", "fragment"), [
    (["1.0.0"], "1.0.0", "version 1.0.0 already exists"),
    (["1.2.0"], "1.1.9", "version 1.1.9 is not higher than the latest version 1.2.0"),
    (["1.0.0"], "1.0.0-rc.1", "is not higher than the latest version 1.0.0"),  # a pre-release ranks lower
    (["1.0.0-beta.11", "1.0.0-rc.1"], "1.0.0-beta.2", "is not higher"),
], ids=["duplicate", "lower", "prerelease_of_existing", "prerelease_order"])
def test_a_new_version_must_be_higher_than_every_existing_one(stack, existing, new, fragment):
    client = stack.account().client
    tid = create(client)["id"]
    for version in existing:
        add_version(client, tid, version)
    response = client.post(f"/pipeline_templates/{tid}/versions", json={"version": new, "document": document()})
    assert response.status_code == 409
    [error] = response.json()["detail"]
    assert error["loc"] == ["body", "version"] and fragment in error["msg"], error
    assert [v["version"] for v in show(client, tid)["versions"]] == existing[::-1]


def test_versions_are_ordered_by_semver_precedence_not_text(stack):
    client = stack.account().client
    tid = create(client)["id"]
    for version in ("1.0.0-alpha", "1.0.0-alpha.1", "1.0.0-beta.2", "1.0.0-beta.11", "1.0.0", "1.9.0", "1.10.0"):
        add_version(client, tid, version)
    body = show(client, tid)
    assert [v["version"] for v in body["versions"]] == [
        "1.10.0", "1.9.0", "1.0.0", "1.0.0-beta.11", "1.0.0-beta.2", "1.0.0-alpha.1", "1.0.0-alpha"]
    assert publish(client, tid)["published_version"] == "1.10.0"  # default: the highest


def test_publish_without_a_version_is_409_and_changes_nothing(stack):
    client = stack.account().client
    template = create(client, is_public=True)
    response = client.post(f"/pipeline_templates/{template['id']}/publish")
    assert response.status_code == 409
    assert "no version to publish" in response.json()["detail"]
    assert show(client, template["id"])["status"] == "draft"


def test_install_uses_the_highest_published_version_unless_one_is_named(stack):
    owner, user = stack.account(), stack.account()
    tid = published(owner.client, document("v1"))["id"]
    add_version(owner.client, tid, "1.1.0", document("v11"))
    publish(owner.client, tid, "1.1.0")
    add_version(owner.client, tid, "2.0.0-rc.1", document("v2rc"))  # a draft
    assert install(user.client, tid)["name"] == "v11"
    assert install(user.client, tid, version="1.0.0")["name"] == "v1"
    draft = user.client.post(f"/pipeline_templates/{tid}/install", json={"version": "2.0.0-rc.1"})
    assert draft.status_code == 422
    [error] = draft.json()["detail"]
    assert error["loc"] == ["body", "version"]
    assert "no published version '2.0.0-rc.1'; published versions: 1.0.0, 1.1.0" in error["msg"]
    # the owner may try a draft version before publishing it
    assert install(owner.client, tid, version="2.0.0-rc.1")["name"] == "v2rc"
    assert show(owner.client, tid)["installation_count"] == 3


def test_the_owner_installs_a_private_draft_template_only_by_naming_the_version(stack):
    client = stack.account().client
    tid = create(client, initial_version={"version": "0.1.0", "document": document("mine")})["id"]
    refused = client.post(f"/pipeline_templates/{tid}/install")
    assert refused.status_code == 409 and "no published version" in refused.json()["detail"]
    assert install(client, tid, version="0.1.0")["name"] == "mine"


def test_install_slug_clash_is_409_naming_slug_and_an_override_solves_it(stack):
    owner, user = stack.account(), stack.account()
    tid = published(owner.client, document("tool"))["id"]
    install(user.client, tid)
    clash = user.client.post(f"/pipeline_templates/{tid}/install", json={})
    assert clash.status_code == 409
    [error] = clash.json()["detail"]
    assert error["loc"] == ["body", "slug"] and "slug 'tool' is already used" in error["msg"]
    assert show(owner.client, tid)["installation_count"] == 1  # a refused install is not counted
    second = install(user.client, tid, slug="tool-2")
    assert (second["name"], second["slug"]) == ("tool", "tool-2")
    assert user.client.get("/pipelines").json()["count"] == 2


def test_an_archived_template_leaves_the_marketplace_and_refuses_installs(stack):
    owner, user = stack.account(), stack.account()
    word = tag()
    tid = published(owner.client, name=f"archive {word}")["id"]
    assert market_ids(user.client, q=word) == [tid]
    archived = owner.client.post(f"/pipeline_templates/{tid}/archive")
    assert archived.status_code == 200 and archived.json()["status"] == "archived"
    assert market_ids(user.client, q=word) == []
    assert user.client.get(f"/pipeline_templates/{tid}").status_code == 404
    assert user.client.post(f"/pipeline_templates/{tid}/install").status_code == 404
    refused = owner.client.post(f"/pipeline_templates/{tid}/install", json={"slug": "own-copy"})
    assert refused.status_code == 409 and "archived" in refused.json()["detail"]
    assert show(owner.client, tid)["installation_count"] == 0
    assert owner.client.get("/pipelines").json()["count"] == 0
    # publishing again brings it back
    publish(owner.client, tid)
    assert market_ids(user.client, q=word) == [tid]
    install(user.client, tid)


def test_rating_your_own_template_is_409(stack):
    client = stack.account().client
    tid = published(client)["id"]
    response = client.post(f"/pipeline_templates/{tid}/rate", json={"rating": 5})
    assert response.status_code == 409
    assert "cannot rate your own template" in response.json()["detail"]
    assert (show(client, tid)["rating_count"], client.get(f"/pipeline_templates/{tid}/ratings").json()["count"]) == (0, 0)


# ---- marketplace ---------------------------------------------------------------------------


def test_marketplace_search_filters_sort_and_pages(stack):
    owner, other = stack.account(), stack.account()
    word = tag()
    raters = [stack.account() for _ in range(2)]
    installer = stack.account()
    a = published(owner.client, name=f"Alpha {word.upper()}", category="security", difficulty="beginner")["id"]
    b = published(other.client, name="Beta", description=f"about {word} things", category="security",
                  difficulty="expert")["id"]
    c = published(owner.client, name=f"gamma-{word}", category="deploy", difficulty="expert")["id"]
    # never listed: private, draft, archived
    published(owner.client, name=f"private {word}", is_public=False)
    create(owner.client, f"draft {word}", is_public=True, initial_version={"version": "1.0.0", "document": document()})
    archived = published(owner.client, name=f"archived {word}")["id"]
    owner.client.post(f"/pipeline_templates/{archived}/archive")

    for rater, (ra, rb, rc) in zip(raters, [(5, 2, 4), (5, 3, 3)], strict=True):
        rate(rater.client, a, ra)
        rate(rater.client, b, rb)
        rate(rater.client, c, rc)
    for n in range(3):
        install(installer.client, b, slug=f"b-{n}")
    install(installer.client, a, slug="a-0")

    assert market_ids(other.client, q=word) == [a, c, b]  # default sort: rating (5.0, 3.5, 2.5)
    assert market_ids(other.client, q=word, sort="rating") == [a, c, b]
    assert market_ids(other.client, q=word, sort="installs") == [b, a, c]  # 3, 1, 0
    assert market_ids(other.client, q=word, sort="newest") == [c, b, a]
    assert market_ids(other.client, q=word, category="security") == [a, b]
    assert market_ids(other.client, q=word, difficulty="expert") == [c, b]
    assert market_ids(other.client, q=word, category="deploy", difficulty="beginner") == []
    assert market_ids(other.client, q=f"  {word.upper()} ") == [a, c, b]  # case-insensitive, trimmed
    assert market_ids(other.client, q=f"{word}%") == []  # % and _ are literal characters
    assert market_ids(other.client, q=f"{word}_") == []
    paged = market(other.client, q=word, sort="installs", limit=1, offset=1)
    assert (paged["count"], [t["id"] for t in paged["data"]]) == (3, [a])
    by_id = {t["id"]: t for t in market(other.client, q=word)["data"]}
    assert (by_id[a]["is_owner"], by_id[b]["is_owner"]) == (False, True)
    assert (by_id[a]["rating_average"], by_id[a]["rating_count"], by_id[b]["installation_count"]) == (5.0, 2, 3)
    assert by_id[a]["my_rating"] is None
    assert market(raters[0].client, q=word)["data"][0]["my_rating"] == 5


@pytest.mark.parametrize(("params", "loc"), [
    ({"sort": "random"}, ["query", "sort"]),
    ({"category": "games"}, ["query", "category"]),
    ({"difficulty": "easy"}, ["query", "difficulty"]),
    ({"limit": 0}, ["query", "limit"]),
])
def test_bad_marketplace_queries_are_422(stack, params, loc):
    response = stack.account().client.get("/pipeline_templates/marketplace", params=params)
    assert response.status_code == 422
    assert [e["loc"] for e in response.json()["detail"]] == [loc]


# ---- visibility and isolation --------------------------------------------------------------


def write_routes(tid: int) -> list[tuple[str, str, Any]]:
    return [
        ("PATCH", f"/pipeline_templates/{tid}", {"description": "hijacked"}),
        ("POST", f"/pipeline_templates/{tid}/versions", {"version": "9.0.0", "document": document()}),
        ("PUT", f"/pipeline_templates/{tid}/versions/1.1.0", {"document": document("hijacked")}),
        ("POST", f"/pipeline_templates/{tid}/publish", {"version": "1.1.0"}),
        ("POST", f"/pipeline_templates/{tid}/archive", None),
        ("DELETE", f"/pipeline_templates/{tid}", None),
    ]


def every_route(tid: int) -> list[tuple[str, str, Any]]:
    return [
        ("GET", f"/pipeline_templates/{tid}", None),
        ("GET", f"/pipeline_templates/{tid}/versions/1.0.0", None),
        ("GET", f"/pipeline_templates/{tid}/ratings", None),
        ("POST", f"/pipeline_templates/{tid}/install", {"slug": "stolen"}),
        ("POST", f"/pipeline_templates/{tid}/rate", {"rating": 1}),
        *write_routes(tid),
    ]


def owner_view(client: httpx.Client, tid: int) -> dict[str, Any]:
    return {"template": show(client, tid), "ratings": client.get(f"/pipeline_templates/{tid}/ratings").json()}


def make_template(client: httpx.Client, state: str) -> int:
    """A template with a published 1.0.0 (except drafts) and a draft 1.1.0, in ``state``."""
    tid = create(client, is_public=state != "private",
                 initial_version={"version": "1.0.0", "document": document()})["id"]
    if state != "draft":
        publish(client, tid)
    add_version(client, tid, "1.1.0")
    if state == "archived":
        assert client.post(f"/pipeline_templates/{tid}/archive").status_code == 200
    return tid


@pytest.mark.parametrize("state", ["draft", "private", "archived"])
def test_another_account_gets_404_on_every_route_of_a_template_it_cannot_see(stack, state):
    owner = stack.account()
    tid = make_template(owner.client, state)
    before = owner_view(owner.client, tid)
    intruder = stack.account().client
    for method, path, body in every_route(tid):
        response = intruder.request(method, path, json=body)
        assert response.status_code == 404, (method, path, response.status_code, response.text)
        assert response.json() == {"detail": "pipeline template not found"}
    assert owner_view(owner.client, tid) == before
    assert intruder.get("/pipelines").json()["count"] == 0
    assert intruder.get("/pipeline_templates").json()["count"] == 0


def test_another_account_sees_a_public_published_template_but_its_write_routes_answer_404(stack):
    owner = stack.account()
    tid = make_template(owner.client, "public")
    before = owner_view(owner.client, tid)
    intruder = stack.account().client
    for method, path, body in write_routes(tid):
        response = intruder.request(method, path, json=body)
        assert response.status_code == 404, (method, path, response.status_code, response.text)
        assert response.json() == {"detail": "pipeline template not found"}
    assert owner_view(owner.client, tid) == before
    assert intruder.get("/pipeline_templates").json()["count"] == 0  # not its own
    # reads of what is published work; the draft version stays hidden
    assert [v["version"] for v in show(intruder, tid)["versions"]] == ["1.0.0"]
    assert intruder.get(f"/pipeline_templates/{tid}/versions/1.0.0").status_code == 200
    assert intruder.get(f"/pipeline_templates/{tid}/versions/1.1.0").status_code == 404
    assert intruder.get(f"/pipeline_templates/{tid}/ratings").status_code == 200


def test_a_viewer_can_read_but_every_write_is_403(stack):
    owner = stack.account()
    tid = make_template(owner.client, "public")
    viewer = stack.account(role="viewer").client
    assert show(viewer, tid)["id"] == tid
    assert viewer.get("/pipeline_templates/marketplace").status_code == 200
    writes = [("POST", "/pipeline_templates", {"name": "x"}),
              ("POST", f"/pipeline_templates/{tid}/install", None),
              ("POST", f"/pipeline_templates/{tid}/rate", {"rating": 5}),
              *write_routes(tid)]
    for method, path, body in writes:
        response = viewer.request(method, path, json=body)
        assert response.status_code == 403, (method, path, response.text)
    assert viewer.get("/pipelines").json()["count"] == 0
    assert show(owner.client, tid)["rating_count"] == 0


# ---- 422: bad input names the field and changes nothing ------------------------------------

BAD_VERSIONS = ["1.0", "1.0.0.0", "01.0.0", "1.0.0-", "1.0.0-01", "v1.0.0", "1.0.0+build.1", "1.0.0-rc..1",
                "", "1." + "1" * 60 + ".0"]


@pytest.mark.parametrize("version", BAD_VERSIONS)
def test_a_bad_semantic_version_is_422_naming_version(stack, version):
    client = stack.account().client
    tid = create(client)["id"]
    response = client.post(f"/pipeline_templates/{tid}/versions", json={"version": version, "document": document()})
    assert response.status_code == 422
    [error] = response.json()["detail"]
    assert error["loc"] == ["body", "version"]
    assert "is not a semantic version" in error["msg"]
    assert show(client, tid)["versions"] == []


CREATE_422: list[tuple[str, dict[str, Any], list[Any]]] = [
    ("unknown_category", {"category": "games"}, ["body", "category"]),
    ("unknown_difficulty", {"difficulty": "easy"}, ["body", "difficulty"]),
    ("unknown_field", {"colour": "red"}, ["body", "colour"]),
    ("status_is_not_settable", {"status": "published"}, ["body", "status"]),
    ("bad_slug", {"slug": "Not A Slug"}, ["body", "slug"]),
    ("empty_name", {"name": ""}, ["body", "name"]),
    ("bad_initial_version", {"initial_version": {"version": "1", "document": document()}},
     ["body", "initial_version", "version"]),
    ("invalid_initial_document", {"initial_version": {"version": "1.0.0", "document": document(timeout_minutes=0)}},
     ["body", "initial_version", "document", "timeout_minutes"]),
]


@pytest.mark.parametrize(("fields", "loc"), [c[1:] for c in CREATE_422], ids=[c[0] for c in CREATE_422])
def test_invalid_create_is_422_naming_the_field_and_creates_nothing(stack, fields, loc):
    client = stack.account().client
    response = client.post("/pipeline_templates", json={"name": "t", **fields})
    assert response.status_code == 422, response.text
    assert loc in [e["loc"] for e in response.json()["detail"]], response.json()
    assert client.get("/pipeline_templates").json()["count"] == 0


VERSION_DOCUMENT_422: list[tuple[str, Any, list[Any], str]] = [
    ("unknown_step_type", document(steps=[{"id": "a", "type": "teleport"}]), ["steps", 0, "type"],
     "unknown step type 'teleport'"),
    ("reference_to_missing_step",
     document(steps=[{"id": "a", "type": "run_tests", "with": {"command": "true", "env": {"X": "${{ steps.b.outputs.y }}"}}}]),
     ["steps", 0, "with", "env", "X"], "step 'b' does not exist"),
    ("expression_in_command", document(command="echo ${{ inputs.x }}", inputs={"x": {}}),
     ["steps", 0, "with", "command"], "expressions are not allowed in shell text"),
    ("unknown_document_field", document(colour="red"), ["colour"], "Extra inputs are not permitted"),
    ("no_steps", document(steps=[]), ["steps"], "at least 1 item"),
    ("not_a_mapping", ["name"], [], "valid dictionary"),
]


@pytest.mark.parametrize(("doc", "loc", "fragment"), [c[1:] for c in VERSION_DOCUMENT_422],
                         ids=[c[0] for c in VERSION_DOCUMENT_422])
def test_an_invalid_version_document_is_422_under_document_and_saves_nothing(stack, doc, loc, fragment):
    client = stack.account().client
    tid = create(client, initial_version={"version": "1.0.0", "document": document("kept")})["id"]
    before = show(client, tid)
    for method, path, body in [("POST", f"/pipeline_templates/{tid}/versions", {"version": "1.1.0", "document": doc}),
                               ("PUT", f"/pipeline_templates/{tid}/versions/1.0.0", {"document": doc})]:
        response = client.request(method, path, json=body)
        assert response.status_code == 422, (method, response.text)
        errors = response.json()["detail"]
        assert any(e["loc"] == ["body", "document", *loc] and fragment in e["msg"] for e in errors), errors
        if isinstance(doc, dict):  # our validation never echoes the document back
            assert all("input" not in e for e in errors)
    assert show(client, tid) == before


PATCH_422: list[tuple[str, dict[str, Any], list[Any]]] = [
    ("null_name", {"name": None}, ["body", "name"]),
    ("null_is_public", {"is_public": None}, ["body", "is_public"]),
    ("unknown_category", {"category": "games"}, ["body", "category"]),
    ("status", {"status": "archived"}, ["body", "status"]),
    ("installation_count", {"installation_count": 1000}, ["body", "installation_count"]),
    ("rating_average", {"rating_average": 5.0}, ["body", "rating_average"]),
]


@pytest.mark.parametrize(("changes", "loc"), [c[1:] for c in PATCH_422], ids=[c[0] for c in PATCH_422])
def test_invalid_patch_is_422_naming_the_field_and_changes_nothing(stack, changes, loc):
    client = stack.account().client
    template = published(client)
    response = client.patch(f"/pipeline_templates/{template['id']}", json={"description": "lost", **changes})
    assert response.status_code == 422, response.text
    assert [e["loc"] for e in response.json()["detail"]] == [loc]
    assert show(client, template["id"]) == template


@pytest.mark.parametrize(("body", "loc"), [
    ({"rating": 0}, ["body", "rating"]),
    ({"rating": 6}, ["body", "rating"]),
    ({"rating": 4.5}, ["body", "rating"]),
    ({}, ["body", "rating"]),
    ({"rating": 3, "stars": 3}, ["body", "stars"]),
], ids=["zero", "six", "fraction", "missing", "unknown_field"])
def test_a_bad_rating_is_422_naming_the_field_and_changes_nothing(stack, body, loc):
    owner, rater = stack.account(), stack.account()
    tid = published(owner.client)["id"]
    rate(rater.client, tid, 4)
    response = rater.client.post(f"/pipeline_templates/{tid}/rate", json=body)
    assert response.status_code == 422
    assert [e["loc"] for e in response.json()["detail"]] == [loc]
    after = show(rater.client, tid)
    assert (after["rating_average"], after["rating_count"], after["my_rating"]) == (4.0, 1, 4)


@pytest.mark.parametrize(("body", "loc", "fragment"), [
    ({"version": "latest"}, ["body", "version"], "is not a semantic version"),
    ({"version": "3.0.0"}, ["body", "version"], "no published version '3.0.0'; published versions: 1.0.0"),
    ({"slug": "Bad Slug"}, ["body", "slug"], "should match pattern"),
    ({"name": ""}, ["body", "name"], "at least 1 character"),
    ({"account_id": 1}, ["body", "account_id"], "Extra inputs"),
], ids=["bad_semver", "unknown_version", "bad_slug", "empty_name", "unknown_field"])
def test_a_bad_install_is_422_naming_the_field_and_installs_nothing(stack, body, loc, fragment):
    owner, user = stack.account(), stack.account()
    tid = published(owner.client)["id"]
    response = user.client.post(f"/pipeline_templates/{tid}/install", json=body)
    assert response.status_code == 422, response.text
    [error] = response.json()["detail"]
    assert error["loc"] == loc and fragment in error["msg"], error
    assert user.client.get("/pipelines").json()["count"] == 0
    assert show(owner.client, tid)["installation_count"] == 0


def test_publishing_an_unknown_version_is_422_and_changes_nothing(stack):
    client = stack.account().client
    tid = create(client, initial_version={"version": "1.0.0", "document": document()})["id"]
    response = client.post(f"/pipeline_templates/{tid}/publish", json={"version": "2.0.0"})
    assert response.status_code == 422
    [error] = response.json()["detail"]
    assert error["loc"] == ["body", "version"] and "no version '2.0.0'; versions: 1.0.0" in error["msg"]
    after = show(client, tid)
    assert (after["status"], after["versions"][0]["published"]) == ("draft", False)


# ---- concurrency ---------------------------------------------------------------------------


def test_concurrent_installs_are_all_counted(stack):
    owner = stack.account()
    tid = published(owner.client)["id"]
    users = [stack.account() for _ in range(10)]
    with ThreadPoolExecutor(10) as pool:
        responses = list(pool.map(lambda u: u.client.post(f"/pipeline_templates/{tid}/install"), users))
    assert [r.status_code for r in responses] == [201] * 10
    assert show(owner.client, tid)["installation_count"] == 10
    assert all(u.client.get("/pipelines").json()["count"] == 1 for u in users)


def test_concurrent_installs_into_one_account_with_one_slug_install_once(stack):
    owner, user = stack.account(), stack.account()
    tid = published(owner.client)["id"]
    with ThreadPoolExecutor(6) as pool:
        responses = list(pool.map(lambda _: user.client.post(f"/pipeline_templates/{tid}/install"), range(6)))
    assert sorted(r.status_code for r in responses) == [201] + [409] * 5
    assert all(r.json()["detail"][0]["loc"] == ["body", "slug"] for r in responses if r.status_code == 409)
    assert show(owner.client, tid)["installation_count"] == 1
    assert user.client.get("/pipelines").json()["count"] == 1


def test_concurrent_ratings_give_the_exact_count_and_average(stack):
    owner = stack.account()
    tid = published(owner.client)["id"]
    raters = [stack.account() for _ in range(10)]
    stars = [5, 4, 3, 2, 1, 5, 5, 4, 1, 2]
    with ThreadPoolExecutor(10) as pool:
        responses = list(pool.map(lambda pair: pair[0].client.post(f"/pipeline_templates/{tid}/rate",
                                                                     json={"rating": pair[1]}),
                                  zip(raters, stars, strict=True)))
    assert [r.status_code for r in responses] == [200] * 10
    after = show(owner.client, tid)
    assert (after["rating_count"], after["rating_average"]) == (10, sum(stars) / 10)

    # everyone changes their mind at once: the count stays, the average follows
    with ThreadPoolExecutor(10) as pool:
        list(pool.map(lambda r: r.client.post(f"/pipeline_templates/{tid}/rate", json={"rating": 3}), raters))
    after = show(owner.client, tid)
    assert (after["rating_count"], after["rating_average"]) == (10, 3.0)


def test_concurrent_re_ratings_by_one_account_keep_one_rating(stack):
    owner, rater = stack.account(), stack.account()
    tid = published(owner.client)["id"]
    with ThreadPoolExecutor(8) as pool:
        responses = list(pool.map(lambda n: rater.client.post(f"/pipeline_templates/{tid}/rate",
                                                              json={"rating": 1 + n % 5}), range(8)))
    assert [r.status_code for r in responses] == [200] * 8
    after = show(rater.client, tid)
    assert after["rating_count"] == 1
    assert after["rating_average"] == after["my_rating"]


def test_concurrent_additions_of_one_version_create_it_once(stack):
    client = stack.account().client
    tid = create(client)["id"]
    with ThreadPoolExecutor(6) as pool:
        responses = list(pool.map(lambda _: client.post(f"/pipeline_templates/{tid}/versions",
                                                        json={"version": "1.0.0", "document": document()}), range(6)))
    assert sorted(r.status_code for r in responses) == [201] + [409] * 5
    assert all(r.json()["detail"][0]["loc"] == ["body", "version"] for r in responses if r.status_code == 409)
    assert [v["version"] for v in show(client, tid)["versions"]] == ["1.0.0"]
