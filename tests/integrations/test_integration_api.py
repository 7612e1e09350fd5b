"""The Integration Framework's routes: templates (own + public, owner-only writes), credentials
(values never shown), instances (configuration checked against the template's schema, credential
requirements) and the refusals, on the real API and database."""

from __future__ import annotations

from tests.integrations.helpers import create_credential, create_template, install, unique

CONFIG_SCHEMA = {"type": "object", "required": ["url"],
                 "properties": {"url": {"type": "string", "pattern": "^https?://"},
                                "retries": {"type": "integer", "minimum": 0}}}
SECRET = "s3cr3t-value-never-shown-0123"


def test_a_template_is_created_listed_filtered_changed_and_deleted(stack):
    client = stack.account().client
    template = create_template(client, "rest_api", category="monitoring", description="Pings a status page",
                               configuration_schema=CONFIG_SCHEMA, default_configuration={"url": "https://x.test"},
                               credential_requirements=[{"name": "token", "description": "API token"}],
                               is_featured=True)
    assert template["owned"] and template["install_count"] == 0
    assert template["credential_requirements"] == [{"name": "token", "description": "API token", "required": True}]
    page = client.get("/integration_templates", params={"integration_type": "rest_api", "q": "status page"}).json()
    assert [t["id"] for t in page["data"]] == [template["id"]] and page["count"] == 1
    assert client.get("/integration_templates", params={"category": "security", "q": "status page"}).json()["count"] == 0
    changed = client.patch(f"/integration_templates/{template['id']}", json={"version": "1.1.0"})
    assert changed.status_code == 200 and changed.json()["version"] == "1.1.0"
    assert client.delete(f"/integration_templates/{template['id']}").status_code == 204
    assert client.get(f"/integration_templates/{template['id']}").status_code == 404


def test_a_public_template_is_readable_and_installable_by_others_but_not_writable(stack):
    owner, other = stack.account().client, stack.account().client
    public = create_template(owner, "custom", is_public=True, default_configuration={"handler": "echo"})
    private = create_template(owner, "custom")
    assert other.get(f"/integration_templates/{public['id']}").json()["owned"] is False
    assert other.get(f"/integration_templates/{private['id']}").status_code == 404
    assert other.patch(f"/integration_templates/{public['id']}", json={"name": "mine"}).status_code == 404
    assert other.delete(f"/integration_templates/{public['id']}").status_code == 404
    installed = other.post(f"/integration_templates/{public['id']}/install", json={"name": unique("i")})
    assert installed.status_code == 201, installed.text
    assert owner.get(f"/integration_templates/{public['id']}").json()["install_count"] == 1
    # an installed template cannot be deleted, even by its owner
    refused = owner.delete(f"/integration_templates/{public['id']}")
    assert refused.status_code == 409 and "instance" in refused.json()["detail"]


def test_an_invalid_json_schema_or_default_configuration_is_refused_with_the_pointer(stack):
    client = stack.account().client
    name = unique("refused")
    bad = client.post("/integration_templates", json={
        "name": name, "slug": unique("x"), "integration_type": "webhook", "category": "testing",
        "input_schema": {"type": "object", "properties": {"n": {"type": "integer", "minimum": "zero"}}}})
    assert bad.status_code == 422
    [problem] = bad.json()["detail"]
    assert problem["loc"][:2] == ["body", "input_schema"] and problem["loc"][-1] == "/properties/n/minimum"
    bad_default = client.post("/integration_templates", json={
        "name": name, "slug": unique("x"), "integration_type": "webhook", "category": "testing",
        "configuration_schema": CONFIG_SCHEMA, "default_configuration": {"url": "ftp://no"}})
    assert bad_default.status_code == 422
    assert bad_default.json()["detail"][0]["loc"] == ["body", "default_configuration", "/url"]
    wrong_type = client.post("/integration_templates", json={
        "name": name, "slug": unique("x"), "integration_type": "carrier_pigeon", "category": "testing"})
    assert wrong_type.status_code == 422 and wrong_type.json()["detail"][0]["loc"] == ["body", "integration_type"]
    assert client.get("/integration_templates", params={"q": name}).json()["count"] == 0  # nothing was created


def test_schema_invalid_configuration_is_422_ending_with_the_pointer_and_creates_nothing(stack):
    client = stack.account().client
    template = create_template(client, configuration_schema=CONFIG_SCHEMA, default_configuration={"url": "https://a.test"})
    response = client.post("/integration_instances", json={
        "template_id": template["id"], "name": unique("i"), "configuration": {"retries": -1}})
    assert response.status_code == 422
    [problem] = response.json()["detail"]
    assert problem["loc"] == ["body", "configuration", "/retries"] and "minimum" in problem["msg"]
    assert client.get("/integration_instances").json()["count"] == 0
    assert client.get(f"/integration_templates/{template['id']}").json()["install_count"] == 0
    # the default configuration fills in what the instance leaves out
    ok = install(client, template["id"], {"retries": 2})
    assert ok["configuration"] == {"retries": 2}


def test_a_credential_missing_a_required_field_is_refused_naming_it(stack):
    client = stack.account().client
    template = create_template(client, credential_requirements=[
        {"name": "signing_secret", "description": "HMAC key"}, {"name": "note", "required": False}])
    wrong = create_credential(client, {"token": SECRET})
    response = client.post("/integration_instances", json={
        "template_id": template["id"], "name": unique("i"), "configuration": {}, "credential_id": wrong["id"]})
    assert response.status_code == 422
    [problem] = response.json()["detail"]
    assert problem["loc"] == ["body", "credential_id"] and "signing_secret" in problem["msg"]
    none = client.post("/integration_instances", json={"template_id": template["id"], "name": unique("i")})
    assert none.status_code == 422 and "signing_secret" in none.json()["detail"][0]["msg"]
    right = create_credential(client, {"signing_secret": SECRET})
    assert install(client, template["id"], credential_id=right["id"])["credential_id"] == right["id"]


def test_credential_values_are_never_returned_or_audited(stack):
    client = stack.account().client
    credential = create_credential(client, {"token": SECRET, "user": "bot"}, credential_type="basic")
    assert credential["field_names"] == ["token", "user"]
    replaced = client.patch(f"/integration_credentials/{credential['id']}", json={"fields": {"api_key": SECRET + "2"}})
    assert replaced.status_code == 200 and replaced.json()["field_names"] == ["api_key"]
    answers = [client.get("/integration_credentials").text, client.get(f"/integration_credentials/{credential['id']}").text,
               replaced.text, client.get("/audit_events", params={"limit": 200}).text]
    assert all(SECRET not in text for text in answers)
    actions = {e["action"] for e in client.get("/audit_events", params={"limit": 200}).json()["data"]}
    assert {"integration_credential.created", "integration_credential.updated"} <= actions
    assert client.delete(f"/integration_credentials/{credential['id']}").status_code == 204
    bad = client.post("/integration_credentials", json={"name": unique("c"), "fields": {"not a name": SECRET}})
    assert bad.status_code == 422 and SECRET not in bad.text


def test_another_accounts_ids_answer_404(stack):
    owner, other = stack.account().client, stack.account().client
    template = create_template(owner, "custom", default_configuration={"handler": "echo"})
    credential = create_credential(owner, {"token": SECRET})
    instance = install(owner, template["id"], credential_id=credential["id"])
    execution = owner.post(f"/integration_instances/{instance['id']}/execute", json={"inputs": {}},
                           params={"wait": 20}).json()
    for path in (f"/integration_templates/{template['id']}", f"/integration_credentials/{credential['id']}",
                 f"/integration_instances/{instance['id']}", f"/integration_executions/{execution['id']}"):
        assert other.get(path).status_code == 404, path
    assert other.patch(f"/integration_instances/{instance['id']}", json={"status": "paused"}).status_code == 404
    assert other.post(f"/integration_instances/{instance['id']}/execute", json={"inputs": {}}).status_code == 404
    assert other.post(f"/integration_executions/{execution['id']}/cancel").status_code == 404
    assert other.delete(f"/integration_credentials/{credential['id']}").status_code == 404
    assert other.post(f"/integration_templates/{template['id']}/install", json={"name": unique("i")}).status_code == 404
    taken = other.post("/integration_instances", json={"template_id": template["id"], "name": unique("i")})
    assert taken.status_code == 422 and taken.json()["detail"][0]["loc"] == ["body", "template_id"]
    # nor can another account's credential be used
    mine = create_template(other, "custom")
    refused = other.post("/integration_instances", json={"template_id": mine["id"], "name": unique("i"),
                                                        "credential_id": credential["id"]})
    assert refused.status_code == 422 and refused.json()["detail"][0]["loc"] == ["body", "credential_id"]
    assert other.get("/integration_executions").json()["count"] == 0


def test_inputs_violating_the_input_schema_and_a_paused_instance_are_refused(stack):
    client = stack.account().client
    template = create_template(client, "custom", default_configuration={"handler": "echo"}, input_schema={
        "type": "object", "required": ["n"], "properties": {"n": {"type": "integer"}}})
    instance = install(client, template["id"])
    bad = client.post(f"/integration_instances/{instance['id']}/execute", json={"inputs": {"n": "seven"}})
    assert bad.status_code == 422
    assert bad.json()["detail"][0]["loc"] == ["body", "inputs", "/n"]
    assert client.get("/integration_executions", params={"instance_id": instance["id"]}).json()["count"] == 0
    assert client.patch(f"/integration_instances/{instance['id']}", json={"status": "paused"}).json()["status"] == "paused"
    paused = client.post(f"/integration_instances/{instance['id']}/execute", json={"inputs": {"n": 7}})
    assert paused.status_code == 409 and "paused" in paused.json()["detail"]
    nulls = client.patch(f"/integration_instances/{instance['id']}", json={"name": None})
    assert nulls.status_code == 422 and nulls.json()["detail"][0]["loc"] == ["body", "name"]
