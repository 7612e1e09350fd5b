"""The operations pages in a real browser against the running stack (API, worker, Temporal, the
local Docker engine in a single-node swarm): schedules with their next fire times, pause / resume
and run now; the template marketplace (search, rate, install); container executions with logs,
events and cancel; a Docker host's containers (sync, stop, start); and the key one: a canary
rollout paused at weight 50 promoted through its page to completed.

SQLite only: what is tested is the browser side. The module makes swarm services, so it runs in
the ``swarm`` xdist group (one worker runs the group in order) and removes what it makes."""

from __future__ import annotations

import re
import uuid
from datetime import UTC, datetime

import pytest

from tests.docker_support import busybox_image as make_image
from tests.docker_support import docker_or_skip
from tests.harness import wait_for
from tests.ui.conftest import shot, sign_in

pytestmark = [pytest.mark.parametrize("database_url", ["sqlite"], indirect=True), pytest.mark.xdist_group("swarm")]

SOCKET = "unix:///var/run/docker.sock"
SLEEPER = ["sh", "-c", "trap 'exit 0' TERM; sleep 3600 & wait"]
UTC_PAGE = {"viewport": {"width": 1280, "height": 900}, "timezone_id": "UTC"}
SLOW_MS = 120_000


def ok(response, *codes: int) -> dict:
    assert response.status_code in (codes or (200, 201)), (response.request.method, response.request.url,
                                                          response.status_code, response.text)
    return response.json() if response.content else {}


def document(name: str, command: str = "echo scheduled") -> dict:
    return {"name": name, "steps": [{"id": "a", "type": "run_tests", "with": {"command": command}}]}


def local(iso: str) -> str:
    """formatTime() of an ISO time in a page whose time zone is UTC."""
    return datetime.fromisoformat(iso.replace("Z", "+00:00")).astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S")


@pytest.fixture(scope="module")
def engine():
    client = docker_or_skip()
    yield client
    client.close()


# ---- schedules ---------------------------------------------------------------------------------


def test_schedules_show_the_next_fire_times_pause_resume_and_run_now(stack, new_page):
    acct = stack.account()
    pipeline = ok(acct.client.post("/pipelines", json=document(f"ui-sched-{uuid.uuid4().hex[:6]}")))
    schedule = ok(acct.client.post("/schedules", json={"pipeline_id": pipeline["id"], "cron": "0 3 * * 1-5",
                                                        "timezone": "Europe/Paris", "description": "nightly"}))
    expected = ok(acct.client.get(f"/schedules/{schedule['id']}"))["next_run_times"]
    assert len(expected) == 5

    page = new_page(**UTC_PAGE)
    sign_in(page, stack.url, acct.token)
    page.get_by_role("link", name="Schedules").click()
    fires = page.get_by_role("list", name=f"Next fire times of schedule {schedule['id']}")
    fires.wait_for()
    items = fires.locator("li")
    assert items.count() == 5
    assert [items.nth(i).inner_text() for i in range(5)] == [local(t) for t in expected]
    assert fires.locator("time").first.get_attribute("datetime") == expected[0]
    row = page.locator("#schedules-list tbody tr")
    assert "0 3 * * 1-5" in row.inner_text() and "Europe/Paris" in row.inner_text()
    assert row.locator(".badge").filter(has_text="active").count() == 1
    shot(page, "schedules")

    page.get_by_role("button", name=re.compile(rf"^Pause schedule {schedule['id']}\b")).click()
    row.locator(".badge", has_text="paused").wait_for()
    assert acct.client.get(f"/schedules/{schedule['id']}").json()["is_active"] is False
    assert acct.client.get(f"/schedules/{schedule['id']}").json()["temporal_state"] == "paused"
    page.get_by_role("button", name=re.compile(rf"^Resume schedule {schedule['id']}\b")).click()
    row.locator(".badge", has_text="active").wait_for()
    assert acct.client.get(f"/schedules/{schedule['id']}").json()["is_active"] is True

    page.get_by_role("button", name=f"Run schedule {schedule['id']} now").click()
    notice = page.locator("#schedules-notice")
    notice.filter(has_text=re.compile(r"started run|fired")).wait_for(timeout=SLOW_MS)
    runs = wait_for(lambda: acct.client.get("/pipeline_runs", params={"pipeline_id": pipeline["id"]}).json()["data"],
                    timeout=60, message="the scheduled run")
    assert runs[0]["trigger_type"] == "schedule"
    if "started run" in notice.inner_text():
        notice.get_by_role("link", name=f"#{runs[0]['run_number']}").click()
        page.wait_for_url(re.compile(rf".*#/runs/{runs[0]['id']}$"))

    # the filter shows paused ones only
    ok(acct.client.patch(f"/schedules/{schedule['id']}", json={"is_active": False}))
    page.goto(f"{stack.url}/ui/#/schedules?is_active=true")
    page.get_by_text("No schedules.").wait_for()
    ok(acct.client.delete(f"/schedules/{schedule['id']}"), 204)


# ---- the template marketplace ------------------------------------------------------------------


def _template(acct, name: str, marker: str) -> dict:
    created = ok(acct.client.post("/pipeline_templates", json={
        "name": name, "description": f"deploys things ({marker})", "category": "deploy", "is_public": True,
        "initial_version": {"version": "1.2.0", "document": document(f"{name}-pipe")}}))
    return ok(acct.client.post(f"/pipeline_templates/{created['id']}/publish", json=None))


def test_the_marketplace_searches_rates_and_installs(stack, new_page):
    acct, other = stack.account(), stack.account()
    marker = uuid.uuid4().hex[:8]
    mine = _template(acct, f"ui-mine-{marker}", marker)
    theirs = _template(other, f"ui-theirs-{marker}", marker)
    _template(other, f"ui-unrelated-{uuid.uuid4().hex[:8]}", "nothing")

    page = new_page(**UTC_PAGE)
    sign_in(page, stack.url, acct.token)
    page.goto(f"{stack.url}/ui/#/templates")
    page.get_by_role("heading", name="Template marketplace").wait_for()
    page.get_by_role("searchbox", name="Search").fill(marker)
    page.get_by_role("button", name="Search", exact=True).click()
    page.wait_for_url(re.compile(rf".*#/templates\?q={marker}$"))
    page.locator("#tpl-summary", has_text="2 templates").wait_for()
    cards = page.locator("article.tpl-card")
    assert cards.count() == 2
    assert sorted(cards.locator("h2").all_inner_texts()) == sorted([mine["name"], theirs["name"]])
    own_card = page.locator(f'article[data-template-id="{mine["id"]}"]')
    assert "yours" in own_card.inner_text() and "v1.2.0" in own_card.inner_text()

    # rating one's own template is refused, and the refusal is shown next to the form
    own_card.get_by_text("Rate…").click()
    own_card.get_by_label("Your rating").select_option("5")
    own_card.get_by_role("button", name="Rate", exact=True).click()
    own_card.get_by_role("alert").filter(has_text="you cannot rate your own template").wait_for()

    card = page.locator(f'article[data-template-id="{theirs["id"]}"]')
    card.get_by_text("Rate…").click()
    card.get_by_label("Your rating").select_option("4")
    card.get_by_label("Review (optional)").fill("works well")
    card.get_by_role("button", name="Rate", exact=True).click()
    card.get_by_text("Thanks: you rated it 4 of 5.").wait_for()
    card.get_by_role("img", name="rated 4.0 out of 5 by 1").wait_for()
    ratings = ok(other.client.get(f"/pipeline_templates/{theirs['id']}/ratings"))["data"]
    assert [(r["rating"], r["review"]) for r in ratings] == [(4, "works well")]

    # a category filter that excludes them
    page.get_by_label("Category").select_option("docs")
    page.locator("#tpl-summary", has_text="No templates match.").wait_for()
    page.get_by_label("Category").select_option("deploy")
    page.locator("#tpl-summary", has_text="2 templates").wait_for()
    shot(page, "marketplace")

    card = page.locator(f'article[data-template-id="{theirs["id"]}"]')
    card.get_by_text("Install…").click()
    card.get_by_label("Pipeline name").fill(f"installed-{marker}")
    card.get_by_label("Pipeline slug").fill(f"installed-{marker}")
    card.get_by_role("button", name="Install", exact=True).click()
    page.wait_for_url(re.compile(r".*#/pipelines/\d+$"))
    pipeline_id = int(page.url.rsplit("/", 1)[1])
    pipeline = ok(acct.client.get(f"/pipelines/{pipeline_id}"))
    assert pipeline["name"] == f"installed-{marker}" and pipeline["slug"] == f"installed-{marker}"
    assert ok(other.client.get(f"/pipeline_templates/{theirs['id']}"))["installation_count"] == 1

    # installing again with the same slug: the 409 names the slug, on the card
    page.goto(f"{stack.url}/ui/#/templates?q={marker}")
    card = page.locator(f'article[data-template-id="{theirs["id"]}"]')
    card.get_by_text("Install…").click()
    card.get_by_label("Pipeline slug").fill(f"installed-{marker}")
    card.get_by_role("button", name="Install", exact=True).click()
    card.get_by_role("alert").filter(has_text="slug").wait_for()
    assert re.search(r"#/templates", page.url)


# ---- container executions ----------------------------------------------------------------------


def test_container_executions_show_logs_and_events_and_cancel(stack, new_page, engine):
    acct = stack.account()
    image = make_image(engine)
    done = ok(acct.client.post("/containers", json={"image": image, "command": ["sh", "-c", "echo hello-from-ui"],
                                                     "timeout_seconds": 60}), 201)
    wait_for(lambda: acct.client.get(f"/containers/{done['id']}").json()["status"] in ("completed", "failed"),
             timeout=90, interval=0.5, message="the container to end")
    long = ok(acct.client.post("/containers", json={"image": image, "command": SLEEPER, "timeout_seconds": 600}), 201)

    page = new_page(**UTC_PAGE)
    sign_in(page, stack.url, acct.token)
    page.goto(f"{stack.url}/ui/#/containers")
    page.get_by_role("link", name=f"Show container execution {done['id']}").click()
    panel = page.locator("#container-detail")
    panel.get_by_role("heading", name=f"Execution #{done['id']}").wait_for()
    panel.locator(".badge", has_text="completed").first.wait_for()
    assert "hello-from-ui" in panel.get_by_label(f"Logs of execution {done['id']}").inner_text()
    panel.locator(".events li", has_text="status changed").first.wait_for()
    panel.get_by_text("cpu seconds").wait_for()
    assert panel.get_by_role("button", name=re.compile("^Cancel")).count() == 0  # it has ended

    page.get_by_role("link", name=f"Show container execution {long['id']}").click()
    panel.get_by_role("heading", name=f"Execution #{long['id']}").wait_for()
    panel.locator(".badge", has_text="running").first.wait_for(timeout=SLOW_MS)
    shot(page, "containers")
    page.once("dialog", lambda dialog: dialog.accept())
    panel.get_by_role("button", name=f"Cancel container execution {long['id']}").click()
    panel.locator(".badge", has_text="cancelled").first.wait_for(timeout=SLOW_MS)
    assert acct.client.get(f"/containers/{long['id']}").json()["status"] == "cancelled"
    page.locator("#container-live", has_text="Ended: cancelled.").wait_for()


# ---- Docker hosts ------------------------------------------------------------------------------


def test_a_docker_hosts_containers_are_synced_stopped_and_started(stack, new_page, engine):
    acct = stack.account()
    marker = uuid.uuid4().hex[:8]
    name = f"ui-ctr-{marker}"
    host = ok(acct.client.post("/docker/hosts", json={"name": f"ui-host-{marker}", "endpoint": SOCKET,
                                                      "auto_sync": False}), 201)
    try:
        ok(acct.client.post(f"/docker/hosts/{host['id']}/containers", json={
            "image": make_image(engine), "command": SLEEPER, "name": name, "start": True,
            "labels": {"devops-ui-test": marker}}), 201)
        page = new_page(**UTC_PAGE)
        sign_in(page, stack.url, acct.token)
        page.get_by_role("link", name="Docker hosts").click()
        page.get_by_role("link", name=host["name"]).click()
        page.wait_for_url(re.compile(rf".*#/hosts/{host['id']}$"))
        page.get_by_role("button", name="Sync now").click()
        page.locator("#host-notice", has_text="Synced: containers").wait_for(timeout=SLOW_MS)
        assert ok(acct.client.get(f"/docker/hosts/{host['id']}"))["last_synced_at"]

        row = page.locator("#host-containers tbody tr", has_text=name)
        row.locator(".badge", has_text="running").wait_for()
        row.get_by_role("button", name=f"stop container {name}").click()
        row = page.locator("#host-containers tbody tr", has_text=name)
        row.locator(".badge", has_text="exited").wait_for(timeout=SLOW_MS)
        assert engine.containers.get(name).status == "exited"
        row.get_by_role("button", name=f"start container {name}").click()
        page.locator("#host-containers tbody tr", has_text=name).locator(".badge", has_text="running").wait_for()
        assert engine.containers.get(name).status == "running"
        page.locator("#host-containers tbody tr", has_text=name).get_by_role(
            "button", name=f"Logs of container {name}").click()
        page.get_by_role("heading", name=re.compile(f"Logs of {name}")).wait_for()
        shot(page, "docker-host")

        page.get_by_role("link", name="← Docker hosts").click()
        listed = page.locator("#hosts-list tbody tr", has_text=host["name"])
        listed.get_by_role("button", name=f"Sync host {host['name']} now").click()
        page.locator("#hosts-notice", has_text=f"{host['name']}: Synced").wait_for(timeout=SLOW_MS)
        listed.locator(".badge", has_text="connected").wait_for()
    finally:
        for container in engine.containers.list(all=True, filters={"label": [f"devops-ui-test={marker}"]}):
            container.remove(force=True)
        acct.client.delete(f"/docker/hosts/{host['id']}")


# ---- a canary promoted through the dashboard ---------------------------------------------------


def running_service(acct, engine, cluster_id: int, service: str, image: str) -> None:
    """A one-replica service made through the API (labelled with the account), once its task runs."""
    ok(acct.client.post(f"/swarm/clusters/{cluster_id}/services", json={
        "name": service, "image": image, "command": SLEEPER, "replicas": 1}), 201)
    wait_for(lambda: any(t["Status"]["State"] == "running" for t in engine.services.get(service).tasks()),
             timeout=60, interval=0.3, message=f"{service} to run")


def test_a_canary_paused_at_weight_50_is_promoted_from_its_page(stack, new_page, engine):
    if (engine.info().get("Swarm") or {}).get("LocalNodeState") != "active":
        pytest.skip("the engine is not in a swarm (scripts/test-services.sh runs `docker swarm init`)")
    acct = stack.account()
    marker = uuid.uuid4().hex[:8]
    service = f"ui-svc-{marker}"
    v1 = make_image(engine)
    v2 = make_image(engine, changes=["ENV DEVOPS_UI_TEST=2"])
    cluster = ok(acct.client.post("/swarm/clusters", json={"name": f"ui-swarm-{marker}", "endpoint": SOCKET,
                                                           "auto_sync": False}), 201)
    deployment_id = None
    try:
        running_service(acct, engine, cluster["id"], service, v1)
        deployment = ok(acct.client.post("/swarm/deployments", json={
            "cluster_id": cluster["id"], "service": service, "image": v2, "strategy": "canary",
            "steps": [{"set_weight": 50}, {"pause": {}}]}), 201)
        deployment_id = deployment["id"]

        page = new_page(**UTC_PAGE)
        sign_in(page, stack.url, acct.token)
        page.goto(f"{stack.url}/ui/#/swarm/deployments/{deployment_id}")
        page.get_by_role("heading", name=f"Rollout #{deployment_id}: {service}").wait_for()
        status = page.locator("#deployment-status")
        status.filter(has_text="paused").wait_for(timeout=SLOW_MS)  # the page refreshes itself every 2 s
        assert page.locator("#canary-weight").inner_text() == "50%"
        assert page.locator("meter").evaluate("m => m.value") == 50
        assert page.get_by_text("strategy: canary").count() == 1
        steps = page.locator("#rollout-steps li")
        assert steps.count() == 2
        assert "done" in steps.nth(0).inner_text() and "Set the canary weight to 50%" in steps.nth(0).inner_text()
        assert steps.nth(1).get_attribute("aria-current") == "step" and "paused here" in steps.nth(1).inner_text()
        timeline = page.locator("#rollout-timeline")
        timeline.locator('li[data-event-type="weight_set"]', has_text="Canary weight 50%").wait_for()
        timeline.locator('li[data-event-type="paused"]').wait_for()
        assert page.get_by_role("button", name=f"Pause rollout {deployment_id}", exact=True).is_disabled()
        assert page.get_by_role("button", name=f"Resume rollout {deployment_id}", exact=True).is_disabled()
        promote = page.get_by_role("button", name=f"Promote rollout {deployment_id}", exact=True)
        assert promote.is_enabled()
        shot(page, "canary-deployment", docs=True)

        promote.click()
        status.filter(has_text="completed").wait_for(timeout=SLOW_MS)
        page.locator("#deployment-announcer", has_text=f"Rollout {deployment_id} is now").wait_for()
        timeline.locator('li[data-event-type="promotion_started"]').wait_for()
        timeline.locator('li[data-event-type="rollout_completed"]').wait_for()
        page.locator("#deployment-refresh", has_text="Ended").wait_for()
        for name in ("Promote", "Pause", "Resume", "Abort"):
            assert page.get_by_role("button", name=f"{name} rollout {deployment_id}", exact=True).is_disabled()
        assert "done" in page.locator("#rollout-steps li").nth(1).inner_text()
        shot(page, "canary-deployment-completed")
        final = ok(acct.client.get(f"/swarm/deployments/{deployment_id}"))
        assert final["status"] == "completed"
        spec = engine.services.get(service).attrs["Spec"]["TaskTemplate"]["ContainerSpec"]
        assert spec["Image"].startswith(v2)
        wait_for(lambda: not engine.services.list(filters={"name": f"{service}-canary"}), timeout=60,
                 message="the canary to be removed")

        # the overview lists the rollout and the cluster's services
        page.get_by_role("link", name="← Docker Swarm").click()
        row = page.locator("#swarm-deployments tbody tr", has_text=f"#{deployment_id} {service}")
        row.locator(".badge", has_text="completed").wait_for()
        card = page.locator(f'section.cluster-card[data-cluster-id="{cluster["id"]}"]')
        card.locator("tbody tr", has_text=service).wait_for(timeout=SLOW_MS)
        assert "all 2 steps done, promoted" in row.inner_text()
        card.get_by_role("button", name=f"Sync cluster {cluster['name']} now").click()
        page.get_by_role("status").filter(has_text=f"{cluster['name']}: synced").wait_for(timeout=SLOW_MS)
        card.locator(".badge", has_text="connected").wait_for()
        assert ok(acct.client.get(f"/swarm/clusters/{cluster['id']}"))["status"] == "connected"
        shot(page, "swarm-overview")
    finally:
        if deployment_id is not None:
            acct.client.post(f"/swarm/deployments/{deployment_id}/abort")
        for name in (service, f"{service}-canary"):
            for found in engine.services.list(filters={"name": name}):
                if found.name == name:
                    found.remove()
        acct.client.delete(f"/swarm/clusters/{cluster['id']}")


def test_a_canary_is_aborted_from_its_page_with_a_reason(stack, new_page, engine):
    if (engine.info().get("Swarm") or {}).get("LocalNodeState") != "active":
        pytest.skip("the engine is not in a swarm (scripts/test-services.sh runs `docker swarm init`)")
    acct = stack.account()
    marker = uuid.uuid4().hex[:8]
    service = f"ui-svc-{marker}"
    v1 = make_image(engine)
    v2 = make_image(engine, changes=["ENV DEVOPS_UI_TEST=3"])
    cluster = ok(acct.client.post("/swarm/clusters", json={"name": f"ui-swarm-{marker}", "endpoint": SOCKET,
                                                           "auto_sync": False}), 201)
    deployment_id = None
    try:
        running_service(acct, engine, cluster["id"], service, v1)
        deployment_id = ok(acct.client.post("/swarm/deployments", json={
            "cluster_id": cluster["id"], "service": service, "image": v2, "strategy": "canary",
            "steps": [{"set_weight": 50}, {"pause": {}}]}), 201)["id"]
        page = new_page(viewport={"width": 390, "height": 844}, timezone_id="UTC")  # a phone
        sign_in(page, stack.url, acct.token)
        page.goto(f"{stack.url}/ui/#/swarm/deployments/{deployment_id}")
        page.locator("#deployment-status").filter(has_text="paused").wait_for(timeout=SLOW_MS)
        page.get_by_label("Abort reason (optional)").fill("wrong build")
        page.once("dialog", lambda dialog: dialog.accept())
        page.get_by_role("button", name=f"Abort rollout {deployment_id}", exact=True).click()
        page.locator("#deployment-status").filter(has_text="aborted").wait_for(timeout=SLOW_MS)
        page.get_by_text("wrong build").first.wait_for()
        shot(page, "canary-aborted-phone")
        final = ok(acct.client.get(f"/swarm/deployments/{deployment_id}"))
        assert final["status"] == "aborted" and final["error"] == "wrong build"
        assert engine.services.get(service).attrs["Spec"]["TaskTemplate"]["ContainerSpec"]["Image"].startswith(v1)
    finally:
        if deployment_id is not None:
            acct.client.post(f"/swarm/deployments/{deployment_id}/abort")
        for name in (service, f"{service}-canary"):
            for found in engine.services.list(filters={"name": name}):
                if found.name == name:
                    found.remove()
        acct.client.delete(f"/swarm/clusters/{cluster['id']}")
