from tests.harness import wait_run


def test_a_manual_run_succeeds(stack):
    acct = stack.account()
    doc = {
        "name": "smoke",
        "inputs": {"greeting": {"type": "string", "default": "hello"}},
        "steps": [
            {"id": "hello", "type": "run_tests",
             "with": {"command": 'echo "result=$GREETING" >> "$DEVOPS_OUTPUT"', "env": {"GREETING": "${{ inputs.greeting }}"}}},
            {"id": "check", "type": "run_tests", "if": "${{ steps.hello.outputs.result == 'hello' }}",
             "with": {"command": 'test "$R" = hello', "env": {"R": "${{ steps.hello.outputs.result }}"}}},
        ],
    }
    r = acct.client.post("/pipelines", json=doc)
    assert r.status_code == 201, r.text
    pid = r.json()["id"]
    r = acct.client.post(f"/pipelines/{pid}/trigger", json={})
    assert r.status_code == 201, r.text
    run = wait_run(acct.client, r.json()["id"])
    assert run["status"] == "success", run
    assert [s["status"] for s in run["steps"]] == ["success", "success"]
    assert run["steps"][0]["outputs"] == {"result": "hello"}
