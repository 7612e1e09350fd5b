"""The root command against the live API: errors as one line with their exit code (bad token,
404, 422 naming the field, usage, unreachable API) and ``devops login``'s owner-only config file."""

from __future__ import annotations

import json
import stat

import pytest

from tests.harness import free_port

SQLITE_ONLY = pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)


@SQLITE_ONLY
def test_errors_are_one_clear_line_with_their_exit_code(stack, devops, tmp_path):
    acct = stack.account()
    bad_token = devops(stack.url, "dvo_not-a-real-token", "pipelines", "list")
    assert bad_token.exit_code == 1 and bad_token.stdout == ""
    [line] = bad_token.stderr.splitlines()
    assert line.startswith("error: ") and "(HTTP 401)" in line

    invalid = tmp_path / "invalid.yaml"
    invalid.write_text("name: broken\nsteps:\n  - id: a\n    type: no_such_type\n")
    refused = devops(stack.url, acct.token, "pipelines", "import", str(invalid))
    assert refused.exit_code == 1
    assert "steps.0.type:" in refused.stderr and "(HTTP 422)" in refused.stderr
    not_yaml = tmp_path / "not.yaml"
    not_yaml.write_text("name: [unclosed\n")
    assert "HTTP 422" in devops(stack.url, acct.token, "pipelines", "import", str(not_yaml)).stderr
    missing = devops(stack.url, acct.token, "runs", "show", "999999")
    assert missing.exit_code == 1 and "(HTTP 404)" in missing.stderr
    usage = devops(stack.url, acct.token, "pipelines", "trigger", "1", "--input", "novalue")
    assert usage.exit_code == 2 and "NAME=VALUE" in usage.output

    port = free_port()
    unreachable = devops(f"http://127.0.0.1:{port}", acct.token, "runs", "list", "--json")
    assert unreachable.exit_code == 2 and unreachable.stdout == ""
    assert f"cannot reach the API at http://127.0.0.1:{port} (connection refused" in unreachable.stderr


@SQLITE_ONLY
def test_login_writes_an_owner_only_config_file_that_later_commands_use(stack, devops, tmp_path):
    acct = stack.account()
    logged_in = devops(stack.url, acct.token, "login", "--api-url", stack.url, "--token", acct.token,
                       DEVOPS_API_URL=None, DEVOPS_TOKEN=None)
    assert logged_in.exit_code == 0, logged_in.output
    path = tmp_path / "config" / "devops" / "config.toml"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    assert acct.token in path.read_text()
    listed = devops(stack.url, acct.token, "pipelines", "list", "--json", DEVOPS_API_URL=None, DEVOPS_TOKEN=None)
    assert listed.exit_code == 0 and json.loads(listed.stdout) == {"data": [], "count": 0}
    # an option beats the environment, which beats the file
    overridden = devops(stack.url, acct.token, "--token", "dvo_wrong", "pipelines", "list")
    assert overridden.exit_code == 1 and "HTTP 401" in overridden.stderr
    refused = devops(stack.url, None, "login", "--api-url", stack.url, "--token", "dvo_wrong")
    assert refused.exit_code == 1 and acct.token in path.read_text()  # a bad token is not saved
