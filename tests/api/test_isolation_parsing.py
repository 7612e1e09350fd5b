"""Issue 10 item 4: resource bombs and malformed numbers/bytes never freeze the API or give 5xx.

A YAML alias bomb (pipeline import, compose stack), a node bomb in a template's JSON document,
50,000-deep nesting, integers beyond 64 bits in path/query/body, and NUL characters in what
reaches a process are refused with 413/422 naming the field, quickly, with nothing stored; the
API answers normally afterwards. Then a walk over the served OpenAPI document sends, to every
operation, out-of-range integers, a deep body and NUL strings, and collects any 5xx.
Limits are ``api.safe_parse``'s: 2 MB bodies, 100,000 nodes after alias expansion, 64 levels.
"""

from __future__ import annotations

import copy
import time
import uuid
from collections import Counter
from typing import Any
from urllib.parse import quote

import httpx
import pytest

from api import safe_parse
from tests.harness import Account, Stack

BEYOND_INT64 = 2**64
INT64_MAX = 2**63 - 1
SOCKET = "unix:///var/run/docker.sock"
# Generous guard only (tests never fail on tight timing): unbounded, the bomb took ~6 minutes.
FAST = 10.0


def billion_laughs(indent: str = "") -> str:
    """The classic 9-level alias bomb: ~9^9 strings once expanded, a few hundred bytes as text."""
    names = "abcdefghi"
    lines = [f"{indent}a: &a [" + ", ".join(['"lol"'] * 9) + "]"]
    lines += [f"{indent}{names[i]}: &{names[i]} [" + ", ".join([f"*{names[i - 1]}"] * 9) + "]"
              for i in range(1, 9)]
    return "\n".join(lines)


def pipeline_yaml(name: str) -> str:
    return (f"name: {name}\nsteps:\n  - id: boom\n    type: run_tests\n    with:\n"
            f"      command: echo hi\n{billion_laughs('      ')}\n")


def doc(name: str, **with_: Any) -> dict[str, Any]:
    return {"name": name, "steps": [{"id": "a", "type": "run_tests", "with": {"command": "echo hi", **with_}}]}


def deep(depth: int = 50_000, kind: str = "list") -> str:
    return "[" * depth + "]" * depth if kind == "list" else '{"a":' * depth + "1" + "}" * depth


def locs(response: httpx.Response) -> list[list[Any]]:
    detail = response.json().get("detail")
    return [item.get("loc") for item in detail] if isinstance(detail, list) else []


def names(client: httpx.Client) -> set[str]:
    listed = client.get("/pipelines", params={"limit": 500})
    assert listed.status_code == 200, listed.text
    return {p["name"] for p in listed.json()["data"]}


def still_answers(account: Account) -> None:
    started = time.monotonic()
    assert account.client.get("/pipelines").status_code == 200
    assert time.monotonic() - started < FAST


# ---- the loaders themselves (pure) ----------------------------------------------------------------------------------


def test_the_yaml_loader_counts_each_alias_as_the_node_it_refers_to():
    started = time.monotonic()
    with pytest.raises(safe_parse.DocumentRefused) as refused:
        safe_parse.load_yaml(billion_laughs())
    assert refused.value.status == 413 and time.monotonic() - started < FAST
    # big text repeated through aliases is counted by its expanded size too
    text = "a: &a " + "x" * 100_000 + "\nb: [" + ", ".join(["*a"] * 60) + "]\n"
    with pytest.raises(safe_parse.DocumentRefused, match="MB of text"):
        safe_parse.load_yaml(text)
    with pytest.raises(safe_parse.DocumentRefused, match="contains it"):
        safe_parse.load_yaml("a: &a [1, *a]\n")
    # ordinary anchors and merge keys still work
    assert safe_parse.load_yaml("x: &d {k: v}\ny:\n  <<: *d\n  z: 1\n") == {"x": {"k": "v"}, "y": {"k": "v", "z": 1}}
    assert safe_parse.load_yaml("when: 2024-01-01\n") == {"when": "2024-01-01"}  # a date has no JSON form


@pytest.mark.parametrize(("text", "loc", "kind"), [
    ("a: " + "[" * 70 + "]" * 70 + "\n", ("body",), "too_deep"),
    ('a: {b: "x\\0y"}\n', ("body", "a", "b"), "nul_character"),
    ("a: [1, 99999999999999999999]\n", ("body", "a", 1), "int_out_of_range"),
    ("a: .inf\n", ("body", "a"), "finite_number"),
    ("a: !!binary aGk=\n", ("body", "a"), "value_type"),
])
def test_the_yaml_loader_names_the_refused_value(text, loc, kind):
    with pytest.raises(safe_parse.DocumentRefused) as refused:
        safe_parse.load_yaml(text)
    assert (refused.value.loc, refused.value.kind) == (loc, kind)


def test_the_json_loader_refuses_depth_without_recursion_error():
    for kind in ("list", "dict"):
        with pytest.raises(safe_parse.DocumentRefused) as refused:
            safe_parse.loads_json(deep(50_000, kind))
        assert refused.value.kind == "too_deep"
    with pytest.raises(safe_parse.DocumentRefused) as refused:
        safe_parse.loads_json("[" + "0," * 200_000 + "0]")
    assert refused.value.status == 413


# ---- bombs through the API ------------------------------------------------------------------------------------------


def test_a_yaml_alias_bomb_in_a_pipeline_import_is_refused_fast(stack: Stack):
    account = stack.account()
    name = f"bomb-{uuid.uuid4().hex[:6]}"
    started = time.monotonic()
    response = account.client.post("/pipelines/import", content=pipeline_yaml(name),
                                   headers={"Content-Type": "application/yaml"})
    assert response.status_code == 413, response.text
    assert "aliases are expanded" in response.text
    assert time.monotonic() - started < FAST
    still_answers(account)
    assert name not in names(account.client)


def test_a_node_bomb_in_a_template_document_is_refused_fast(stack: Stack):
    """Template documents are JSON (no aliases): the same node and depth caps apply to them."""
    account = stack.account()
    wide = doc("tpl-wide", data=[0] * 150_000)
    for body in ({"name": "tpl-bomb", "initial_version": {"version": "1.0.0", "document": wide}},):
        started = time.monotonic()
        response = account.client.post("/pipeline_templates", json=body)
        assert response.status_code == 413, response.text
        assert time.monotonic() - started < FAST
    deep_doc = '{"name": "tpl-deep", "initial_version": {"version": "1.0.0", "document": ' + deep(50_000, "dict") + "}}"
    response = account.client.post("/pipeline_templates", content=deep_doc,
                                   headers={"Content-Type": "application/json"})
    assert response.status_code == 422, response.text
    assert response.json()["detail"][0]["type"] == "too_deep"
    assert account.client.get("/pipeline_templates").json()["count"] == 0
    still_answers(account)


def test_a_yaml_alias_bomb_in_a_compose_stack_is_refused_fast(stack: Stack):
    account = stack.account()
    cluster = account.client.post("/swarm/clusters", json={"name": "bomb-swarm", "endpoint": SOCKET,
                                                           "auto_sync": False})
    assert cluster.status_code == 201, cluster.text
    compose = f"services:\n  web:\n    image: local/busybox:latest\nx-bomb:\n{billion_laughs('  ')}\n"
    started = time.monotonic()
    response = account.client.post(f"/swarm/clusters/{cluster.json()['id']}/stacks",
                                   json={"name": "bomb", "compose": compose})
    assert response.status_code == 413, response.text
    assert time.monotonic() - started < FAST
    still_answers(account)


@pytest.mark.parametrize("kind", ["list", "dict"])
def test_50000_deep_json_is_422_everywhere(stack: Stack, kind: str):
    account = stack.account()
    for method, path in (("POST", "/pipelines"), ("POST", "/pipelines/import"), ("PUT", "/secrets"),
                         ("PATCH", "/users/me")):
        response = account.client.request(method, path, content=deep(50_000, kind),
                                          headers={"Content-Type": "application/json"})
        assert response.status_code == 422, (path, response.status_code, response.text)
        assert response.json()["detail"][0]["type"] == "too_deep"
    still_answers(account)


def test_a_body_over_2_mb_is_413(stack: Stack):
    account = stack.account()
    response = account.client.post("/pipelines", json=doc("huge", blob="x" * (3 * 1024 * 1024)))
    assert response.status_code == 413, response.text
    response = account.client.post("/pipelines/import", content=b"name: x\n# " + b"x" * (3 * 1024 * 1024),
                                   headers={"Content-Type": "application/yaml"})
    assert response.status_code == 413, response.text


# ---- numbers --------------------------------------------------------------------------------------------------------


def test_integers_beyond_64_bits_are_422_naming_the_field(stack: Stack):
    account = stack.account()
    c = account.client
    response = c.get(f"/pipelines/{BEYOND_INT64}")
    assert response.status_code == 422 and ["path", "pipeline_id"] in locs(response), response.text
    response = c.get("/pipelines", params={"offset": BEYOND_INT64})
    assert response.status_code == 422 and ["query", "offset"] in locs(response), response.text
    response = c.get("/pipeline_runs", params={"pipeline_id": -BEYOND_INT64})
    assert response.status_code == 422 and ["query", "pipeline_id"] in locs(response), response.text
    response = c.post("/pipelines", json=doc("big-int", retries=[1, BEYOND_INT64]))
    assert response.status_code == 422, response.text
    assert ["body", "steps", 0, "with", "retries", 1] in locs(response), response.text
    response = c.post("/schedules", json={"pipeline_id": BEYOND_INT64, "cron": "0 3 * * *"})
    assert response.status_code == 422 and ["body", "pipeline_id"] in locs(response), response.text
    # YAML import: the same, naming the path inside the document
    response = c.post("/pipelines/import", content="name: y\nsteps:\n  - id: a\n    type: run_tests\n    with:\n"
                                                  "      command: echo\n      n: 99999999999999999999\n",
                      headers={"Content-Type": "application/yaml"})
    assert response.status_code == 422 and ["body", "steps", 0, "with", "n"] in locs(response), response.text
    # the largest 64-bit id: not found on SQLite; beyond PostgreSQL's 32-bit id column, 422 naming it
    response = c.get(f"/pipelines/{INT64_MAX}")
    assert response.status_code == 404 if stack.backend == "sqlite" else \
        (response.status_code == 422 and locs(response) == [["path", "pipeline_id"]]), response.text
    response = c.post("/schedules", json={"pipeline_id": 2**40, "cron": "0 3 * * *"})
    assert response.status_code in (404, 422), response.text
    assert response.status_code == 404 or ["body", "pipeline_id"] in locs(response), response.text
    assert not names(c) & {"big-int", "y"}


def test_non_finite_numbers_are_422(stack: Stack):
    account = stack.account()
    response = account.client.post("/pipelines", content='{"name": "nan", "steps": [{"id": "a", "type": "run_tests", '
                                                         '"with": {"command": "echo", "x": NaN}}]}',
                                   headers={"Content-Type": "application/json"})
    assert response.status_code == 422 and ["body", "steps", 0, "with", "x"] in locs(response), response.text


# ---- NUL ------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("field", ["command", "working_directory"])
def test_nul_in_what_reaches_a_process_is_422_at_save(stack: Stack, field: str):
    account = stack.account()
    name = f"nul-{field}"
    response = account.client.post("/pipelines", json=doc(name, **{field: "a\u0000b"}))
    assert response.status_code == 422 and ["body", "steps", 0, "with", field] in locs(response), response.text
    response = account.client.post("/pipelines", json=doc(name, env={"V": "a\u0000b"}))
    assert response.status_code == 422 and ["body", "steps", 0, "with", "env", "V"] in locs(response), response.text
    # YAML's "\0" escape gets the same answer
    response = account.client.post(
        "/pipelines/import", headers={"Content-Type": "application/yaml"},
        content=f'name: {name}\nsteps:\n  - id: a\n    type: run_tests\n    with:\n      {field}: "a\\0b"\n')
    assert response.status_code == 422 and ["body", "steps", 0, "with", field] in locs(response), response.text
    assert name not in names(account.client)
    # in a path or query value too
    response = account.client.get("/pipelines", params={"pipeline_type": "a\u0000b"})
    assert response.status_code == 422 and ["query", "pipeline_type"] in locs(response), response.text


def test_the_document_model_refuses_nul_on_its_own():
    """Documents that never pass the HTTP guard (install, clone) are checked by the model too."""
    from pydantic import ValidationError

    from domain.pipeline_document import PipelineDocument

    with pytest.raises(ValidationError) as raised:
        PipelineDocument.model_validate(doc("x", working_directory="sub\u0000dir"))
    assert ("steps", 0, "with", "working_directory") in [e["loc"] for e in raised.value.errors()]


# ---- the OpenAPI walk -----------------------------------------------------------------------------------------------

# The engine or Temporal unreachable is an honest gateway answer (the walk has no registry), not a bug.
UPSTREAM = {502, 503, 504}
TEXT_PARAMS = {"decision": "approve", "provider": "github", "version": "1.0.0"}
# Server-sent-event routes answer a stream that stays open: only the refusal cases are walked there.
STREAMING = ("/stream",)


def _resolve(spec: dict[str, Any], schema: dict[str, Any]) -> dict[str, Any]:
    while "$ref" in schema:
        schema = spec["components"]["schemas"][schema["$ref"].rsplit("/", 1)[1]]
    return schema


def _sample(spec: dict[str, Any], schema: dict[str, Any], depth: int = 0) -> Any:
    """A plausible value for ``schema``: its example, default or first option, else built from its type."""
    schema = _resolve(spec, schema)
    if depth > 8:
        return None
    for key in ("examples",):
        if schema.get(key):
            return copy.deepcopy(schema[key][0])
    if "example" in schema:
        return copy.deepcopy(schema["example"])
    if schema.get("default") is not None:
        return copy.deepcopy(schema["default"])
    if "enum" in schema:
        return schema["enum"][0]
    if "const" in schema:
        return schema["const"]
    for key in ("anyOf", "oneOf", "allOf"):
        options = [o for o in schema.get(key, []) if _resolve(spec, o).get("type") != "null"]
        if options:
            return _sample(spec, options[0], depth + 1)
    kind = schema.get("type")
    if kind == "object" or "properties" in schema:
        return {name: _sample(spec, sub, depth + 1) for name, sub in schema.get("properties", {}).items()}
    if kind == "array":
        return [_sample(spec, schema.get("items", {}), depth + 1)]
    if kind == "integer":
        return 1
    if kind == "number":
        return 1.5
    if kind == "boolean":
        return False
    if kind == "string":
        return "x"
    return "x"


def _map(value: Any, integer: Any = None, text: Any = None) -> tuple[Any, bool]:
    """``value`` with every int (and/or string) replaced; whether anything was."""
    if isinstance(value, bool) or value is None:
        return value, False
    if isinstance(value, int) and integer is not None:
        return integer, True
    if isinstance(value, str) and text is not None:
        return text, True
    if isinstance(value, dict):
        pairs = {k: _map(v, integer, text) for k, v in value.items()}
        return {k: v for k, (v, _) in pairs.items()}, any(hit for _, hit in pairs.values())
    if isinstance(value, list):
        items = [_map(v, integer, text) for v in value]
        return [v for v, _ in items], any(hit for _, hit in items)
    return value, False


def _operations(spec: dict[str, Any]) -> list[tuple[str, str, dict[str, Any]]]:
    found = []
    for path, operations in spec["paths"].items():
        for method, operation in operations.items():
            found.append((method.upper(), path, operation))
    # destructive calls last, so the objects the others reach are still there
    return sorted(found, key=lambda item: item[0] == "DELETE")


def _is_int(spec: dict[str, Any], schema: dict[str, Any]) -> bool:
    schema = _resolve(spec, schema)
    return schema.get("type") == "integer" or any(_is_int(spec, o) for o in schema.get("anyOf", []))


def _world(stack: Stack, account: Account) -> dict[str, Any]:
    """Real objects of the caller, so that the walk reaches the routes' code past their 404s."""
    c = account.client

    def made(response: httpx.Response) -> Any:
        assert response.status_code in (200, 201), (response.request.url, response.text)
        return response.json()["id"]

    ids: dict[str, Any] = {}
    ids["pipeline_id"] = made(c.post("/pipelines", json=doc("walk")))
    ids["run_id"] = made(c.post(f"/pipelines/{ids['pipeline_id']}/trigger", json={}))
    ids["template_id"] = made(c.post("/pipeline_templates", json={
        "name": "walk-tpl", "initial_version": {"version": "1.0.0", "document": doc("walk-tpl")}}))
    ids["schedule_id"] = made(c.post("/schedules", json={"pipeline_id": ids["pipeline_id"], "cron": "0 3 * * *"}))
    ids["provider_id"] = made(c.post("/providers", json={"name": "walk-gh", "provider_type": "github",
                                                         "base_url": "http://127.0.0.1:9"}))
    ids["repository_id"] = made(c.post("/repositories", json={"provider_id": ids["provider_id"],
                                                              "full_name": "walk/repo"}))
    ids["host_id"] = made(c.post("/docker/hosts", json={"name": "walk-host", "endpoint": SOCKET, "auto_sync": False}))
    ids["cluster_id"] = made(c.post("/swarm/clusters", json={"name": "walk-swarm", "endpoint": SOCKET,
                                                             "auto_sync": False}))
    return ids


def _request(spec: dict[str, Any], ids: dict[str, Any], method: str, path: str, operation: dict[str, Any], *,
             path_int: Any = None, query_int: Any = None, body: Any = None, raw: str | None = None,
             text: str | None = None) -> dict[str, Any]:
    url, query = path, {}
    for param in operation.get("parameters", []):
        name, where, schema = param["name"], param["in"], param.get("schema", {})
        is_int = _is_int(spec, schema)
        if where == "path":
            value = path_int if (is_int and path_int is not None) else ids.get(name, 1 if is_int else None)
            if value is None:
                value = TEXT_PARAMS.get(name, "x")
            if text is not None and not is_int:
                value = quote(text, safe="")  # httpx sends a percent-escape; the server decodes it
            url = url.replace("{" + name + "}", str(value))
        elif where == "query":
            if is_int and query_int is not None:
                query[name] = query_int
            elif text is not None and not is_int and _resolve(spec, schema).get("type") != "boolean":
                query[name] = text
            elif param.get("required"):
                query[name] = ids.get(name, 1) if is_int else _sample(spec, schema)
    request: dict[str, Any] = {"method": method, "url": url, "params": query}
    if raw is not None:
        request["content"] = raw
        request["headers"] = {"Content-Type": "application/json"}
    elif body is not None:
        request["json"] = body
    return request


def _body(spec: dict[str, Any], operation: dict[str, Any]) -> Any:
    content = operation.get("requestBody", {}).get("content", {})
    if "application/json" not in content:
        return None
    media = content["application/json"]
    if "example" in media:
        return copy.deepcopy(media["example"])
    return _sample(spec, media.get("schema", {}))


def test_the_openapi_walk_finds_no_5xx(stack: Stack):
    """Every operation: integers beyond 64 bits in its path, query and body → 422 naming that part;
    a 50,000-deep body and NUL strings → 422; the largest 64-bit integer everywhere → never 5xx."""
    account = stack.account()
    c = account.client
    spec = httpx.get(f"{stack.url}/openapi.json").json()
    ids = _world(stack, account)
    problems: list[str] = []
    statuses: dict[str, list[int]] = {}
    sent = 0

    def check(case: str, request: dict[str, Any], expect_422: str | None = None) -> None:
        nonlocal sent
        sent += 1
        url = request.pop("url").removeprefix("/api/v1/devops")
        try:
            response = c.request(url=url, timeout=30, **request)
        except httpx.TimeoutException:
            problems.append(f"{case} {request['method']} {url}: no answer in 30 s")
            return
        statuses.setdefault(case, []).append(response.status_code)
        if response.status_code >= 500 and response.status_code not in UPSTREAM:
            problems.append(f"{case} {request['method']} {url}: {response.status_code} {response.text[:200]}")
        elif expect_422 is not None:
            where = [loc[0] for loc in locs(response) if loc]
            if response.status_code != 422 or expect_422 not in where:
                problems.append(f"{case} {request['method']} {url}: {response.status_code} {response.text[:200]} "
                                f"(expected 422 on {expect_422})")

    for method, path, operation in _operations(spec):
        if not path.startswith("/api/v1/devops"):
            continue
        params = operation.get("parameters", [])
        streaming = any(part in path for part in STREAMING)
        int_path = [p for p in params if p["in"] == "path" and _is_int(spec, p.get("schema", {}))]
        int_query = [p for p in params if p["in"] == "query" and _is_int(spec, p.get("schema", {}))]
        json_body = "application/json" in operation.get("requestBody", {}).get("content", {})
        sample = _body(spec, operation) if json_body else None
        if int_path:
            check("path>int64", _request(spec, ids, method, path, operation, path_int=BEYOND_INT64, body=sample),
                  "path")
        if int_query:
            check("query>int64", _request(spec, ids, method, path, operation, query_int=BEYOND_INT64, body=sample),
                  "query")
        if json_body:
            big, hit = _map(sample, integer=BEYOND_INT64)
            if not hit:
                big = {"value": BEYOND_INT64} if not isinstance(big, dict) else {**big, "value": BEYOND_INT64}
            check("body>int64", _request(spec, ids, method, path, operation, body=big), "body")
            check("body-deep", _request(spec, ids, method, path, operation, raw=deep()), "body")
            nul, hit = _map(sample, text="a\u0000b")
            if not hit:
                nul = {"value": "a\u0000b"} if not isinstance(nul, dict) else {**nul, "value": "a\u0000b"}
            check("body-nul", _request(spec, ids, method, path, operation, body=nul), "body")
        texts = [p for p in params if p["in"] in ("path", "query") and not _is_int(spec, p.get("schema", {}))
                 and _resolve(spec, p.get("schema", {})).get("type") != "boolean"]
        if texts:
            check("param-nul", _request(spec, ids, method, path, operation, text="a\u0000b", body=sample),
                  texts[0]["in"] if len({p["in"] for p in texts}) == 1 else None)
        if streaming:
            continue
        if int_path:
            check("path=int64max", _request(spec, ids, method, path, operation, path_int=INT64_MAX, body=sample))
        edge, _ = _map(sample, integer=INT64_MAX)
        if int_query or json_body:
            check("query/body=int64max", _request(spec, ids, method, path, operation, query_int=INT64_MAX, body=edge))
    print(f"{sent} requests, {len(problems)} problems", {case: Counter(codes) for case, codes in statuses.items()})
    assert not problems, "\n".join(problems)
    still_answers(account)
