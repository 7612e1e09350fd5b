"""AI configs, prompt templates and the render preview through the API: what is stored and
shown (never the key), every bad input as a 422 naming the field, another account's ids as 404."""

from __future__ import annotations

import uuid

import pytest

from db.access_models import AuditEvent
from db.ai_models import AiConfig
from tests.ai.fake_model_api import API_KEY
from tests.api.test_isolation_targets import private_targets_off


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def make_config(client, **extra) -> dict:
    body = {"name": unique("cfg"), "provider": "anthropic", "model": "claude-test", "api_key": API_KEY, **extra}
    response = client.post("/ai_configs", json=body)
    assert response.status_code == 201, response.text
    return response.json()


def make_template(client, **extra) -> dict:
    body = {"name": unique("tpl"), "body": "Review {{ diff }}", "system": "You review {{ lang }} code.",
            "variables_schema": {"type": "object", "required": ["diff"],
                                 "properties": {"diff": {"type": "string"}, "lang": {"type": "string"},
                                                "files": {"type": "array", "items": {"type": "string"}}}},
            **extra}
    response = client.post("/prompt_templates", json=body)
    assert response.status_code == 201, response.text
    return response.json()


def problem(response, *loc_start) -> dict:
    assert response.status_code == 422, response.text
    found = [d for d in response.json()["detail"] if d["loc"][:len(loc_start)] == list(loc_start)]
    assert found, response.json()
    return found[0]


def test_an_ai_config_keeps_its_key_encrypted_and_write_only(stack):
    acct = stack.account()
    config = make_config(acct.client, run_token_budget=1000, input_cost_per_mtok=3, output_cost_per_mtok=15)
    assert config["has_api_key"] is True and "api_key" not in config and config["run_token_budget"] == 1000
    with stack.sessions() as session:
        row = session.get(AiConfig, config["id"])
        assert row.encrypted_api_key and API_KEY.encode() not in row.encrypted_api_key
        details = [str(e.details) for e in session.query(AuditEvent).filter_by(account_id=acct.id)]
    assert any("ai_config" in str(d) or config["name"] in d for d in details)
    assert not any(API_KEY in d for d in details)
    listed = acct.client.get("/ai_configs").json()
    assert listed["count"] == 1 and API_KEY not in str(listed)
    changed = acct.client.patch(f"/ai_configs/{config['id']}", json={"api_key": None, "max_tokens": 77}).json()
    assert changed["has_api_key"] is False and changed["max_tokens"] == 77
    assert acct.client.delete(f"/ai_configs/{config['id']}").status_code == 204
    assert acct.client.get(f"/ai_configs/{config['id']}").status_code == 404
    with stack.sessions() as session:
        actions = {e.action for e in session.query(AuditEvent).filter_by(account_id=acct.id)}
    assert {"ai_config.created", "ai_config.updated", "ai_config.deleted"} <= actions


def test_only_one_config_is_the_default(stack):
    client = stack.account().client
    first = make_config(client, is_default=True)
    second = make_config(client, is_default=True)
    assert client.get(f"/ai_configs/{first['id']}").json()["is_default"] is False
    assert client.get(f"/ai_configs/{second['id']}").json()["is_default"] is True
    assert client.post("/ai_configs", json={"name": first["name"], "provider": "anthropic",
                                            "model": "m"}).status_code == 409


@pytest.mark.parametrize(("body", "loc"), [
    ({"provider": "gemini"}, ["body", "provider"]),
    ({"provider": "openai_compatible"}, ["body", "base_url"]),
    ({"base_url": "ftp://models.example.com"}, ["body", "base_url"]),
    ({"max_tokens": 0}, ["body", "max_tokens"]),
    ({"max_tokens": 200_001}, ["body", "max_tokens"]),
    ({"temperature": 2.5}, ["body", "temperature"]),
    ({"run_token_budget": 0}, ["body", "run_token_budget"]),
    ({"monthly_token_budget": -5}, ["body", "monthly_token_budget"]),
    ({"input_cost_per_mtok": -1}, ["body", "input_cost_per_mtok"]),
])
def test_bad_ai_config_input_is_422_naming_the_field_and_stores_nothing(stack, body, loc):
    client = stack.account().client
    full = {"name": unique("bad"), "provider": "anthropic", "model": "m", **body}
    problem(client.post("/ai_configs", json=full), *loc)
    assert client.get("/ai_configs").json()["count"] == 0


def test_a_private_base_url_is_refused_unless_private_targets_are_allowed(stack):
    client = stack.account().client
    body = {"name": unique("local"), "provider": "openai_compatible", "model": "m",
            "base_url": "http://127.0.0.1:8080/v1"}
    with private_targets_off(stack):
        found = problem(client.post("/ai_configs", json=body), "body", "base_url")
        assert "127.0.0.1" in found["msg"]
        assert client.get("/ai_configs").json()["count"] == 0
    assert client.post("/ai_configs", json=body).status_code == 201  # the test stack allows them


def test_a_prompt_template_is_versioned_and_renders_in_the_sandbox(stack):
    acct = stack.account()
    client = acct.client
    template = make_template(client)
    assert template["current_version"] == 1 and template["body"] == "Review {{ diff }}"
    rendered = client.post(f"/prompt_templates/{template['id']}/render",
                           json={"variables": {"diff": "+{{ 7*7 }} $(rm -rf /)", "lang": "Go"}})
    assert rendered.status_code == 200, rendered.text
    # the value is data: its braces are never rendered
    assert rendered.json() == {"rendered": "Review +{{ 7*7 }} $(rm -rf /)", "system": "You review Go code.",
                               "version": 1, "bytes": len("Review +{{ 7*7 }} $(rm -rf /)")}
    version = client.post(f"/prompt_templates/{template['id']}/versions",
                          json={"body": "v2 {{ diff | upper }}", "variables_schema": {}})
    assert version.status_code == 201 and version.json()["version"] == 2
    shown = client.get(f"/prompt_templates/{template['id']}").json()
    assert shown["current_version"] == 2 and shown["body"] == "v2 {{ diff | upper }}"
    assert client.post(f"/prompt_templates/{template['id']}/render",
                       json={"variables": {"diff": "x"}}).json()["rendered"] == "v2 X"
    old = client.post(f"/prompt_templates/{template['id']}/render", json={"variables": {"diff": "x", "lang": "C"}, "version": 1})
    assert old.json()["rendered"] == "Review x" and old.json()["version"] == 1
    versions = client.get(f"/prompt_templates/{template['id']}/versions").json()
    assert versions["count"] == 2 and [v["version"] for v in versions["data"]] == [2, 1]
    patched = client.patch(f"/prompt_templates/{template['id']}", json={"category": "review"}).json()
    assert patched["category"] == "review" and patched["current_version"] == 2
    assert client.delete(f"/prompt_templates/{template['id']}").status_code == 204
    assert client.get(f"/prompt_templates/{template['id']}").status_code == 404
    with stack.sessions() as session:
        actions = {e.action for e in session.query(AuditEvent).filter_by(account_id=acct.id)}
    assert {"prompt_template.created", "prompt_template.version_created", "prompt_template.updated",
            "prompt_template.deleted"} <= actions


def test_bad_template_input_is_422_with_the_line_or_the_pointer(stack):
    client = stack.account().client
    syntax = problem(client.post("/prompt_templates", json={"name": unique("t"), "body": "ok\n{% if x %}\nno end"}),
                     "body", "body", "line")
    assert "line" in syntax["msg"]
    schema = problem(client.post("/prompt_templates", json={"name": unique("t"), "body": "x",
                                                            "variables_schema": {"type": "nonsense"}}),
                     "body", "variables_schema")
    assert "JSON Schema" in schema["msg"]
    assert client.get("/prompt_templates").json()["count"] == 0
    template = make_template(client)
    invalid = problem(client.post(f"/prompt_templates/{template['id']}/render",
                                  json={"variables": {"diff": "d", "files": ["a", 3]}}), "body", "variables")
    assert invalid["loc"][-1] == "/files/1"
    missing = problem(client.post(f"/prompt_templates/{template['id']}/render", json={"variables": {}}),
                      "body", "variables")
    assert "diff" in missing["msg"]
    escape = make_template(client, body="a\n{{ ''.__class__.__mro__ }}", variables_schema={}, system=None)
    refused = problem(client.post(f"/prompt_templates/{escape['id']}/render", json={"variables": {}}), "body", "body")
    assert refused["loc"][-2:] == ["line", 2] and "sandbox" in refused["msg"]
    undefined = make_template(client, body="one\ntwo {{ nope }}", variables_schema={}, system=None)
    assert problem(client.post(f"/prompt_templates/{undefined['id']}/render", json={"variables": {}}),
                   "body", "body")["loc"][-1] == 2
    assert client.post(f"/prompt_templates/{template['id']}/render",
                       json={"variables": {"diff": "d"}, "version": 9}).status_code == 404


def test_another_accounts_ids_answer_404(stack):
    owner, other = stack.account().client, stack.account().client
    config, template = make_config(owner), make_template(owner)
    for method, path, body in [
        ("GET", f"/ai_configs/{config['id']}", None), ("PATCH", f"/ai_configs/{config['id']}", {"model": "x"}),
        ("DELETE", f"/ai_configs/{config['id']}", None), ("GET", f"/prompt_templates/{template['id']}", None),
        ("PATCH", f"/prompt_templates/{template['id']}", {"category": "x"}),
        ("DELETE", f"/prompt_templates/{template['id']}", None),
        ("GET", f"/prompt_templates/{template['id']}/versions", None),
        ("POST", f"/prompt_templates/{template['id']}/versions", {"body": "x"}),
        ("POST", f"/prompt_templates/{template['id']}/render", {"variables": {"diff": "x"}}),
    ]:
        assert other.request(method, path, json=body).status_code == 404, (method, path)
    assert other.get("/ai_configs").json()["count"] == 0
    assert owner.get(f"/ai_configs/{config['id']}").json()["model"] == "claude-test"
