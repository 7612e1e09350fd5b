"""Making integration templates, credentials and instances through the API in tests."""

from __future__ import annotations

import uuid
from typing import Any

from tests.harness import wait_for

FINISHED = {"success", "failure", "cancelled"}


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def create_template(client, integration_type: str = "webhook", **fields: Any) -> dict:
    body = {"name": unique("tpl"), "slug": unique("tpl"), "integration_type": integration_type,
            "category": "notifications", **fields}
    response = client.post("/integration_templates", json=body)
    assert response.status_code == 201, response.text
    return response.json()


def create_credential(client, fields: dict[str, str], **extra: Any) -> dict:
    response = client.post("/integration_credentials", json={"name": unique("cred"), "fields": fields, **extra})
    assert response.status_code == 201, response.text
    return response.json()


def install(client, template_id: int, configuration: dict | None = None, credential_id: int | None = None,
            name: str | None = None) -> dict:
    response = client.post("/integration_instances", json={
        "template_id": template_id, "name": name or unique("inst"), "configuration": configuration or {},
        "credential_id": credential_id})
    assert response.status_code == 201, response.text
    return response.json()


def execute(client, instance_id: int, inputs: dict | None = None, wait: float = 30) -> dict:
    response = client.post(f"/integration_instances/{instance_id}/execute", json={"inputs": inputs or {}},
                           params={"wait": wait})
    assert response.status_code == 202, response.text
    return response.json()


def wait_execution(client, execution_id: int, timeout: float = 45) -> dict:
    def done():
        body = client.get(f"/integration_executions/{execution_id}", params={"wait": 10}).json()
        return body if body["status"] in FINISHED else None

    return wait_for(done, timeout=timeout, interval=0.05, message=f"integration execution {execution_id} to end")
