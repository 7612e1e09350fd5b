"""Issue 10 item 5: ``checkout`` obeys the private-address rule. With private targets off, a local
path, ``file://`` or a host on a loopback, private or link-local address fails the step (not
retried) naming ``with.repository`` and DEVOPS_ALLOW_PRIVATE_TARGETS, before git runs; with
them on, a local bare repository still clones."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
from temporalio.exceptions import ApplicationError
from temporalio.testing import ActivityEnvironment

from activities.steps import STEP_FAILED, StepActivities, _pinned_git_config
from adapters.network_targets import image_registry_problem, repository_check
from tests.activities.conftest import make_test_settings, step_input

GIT = ["git", "-c", "user.name=Test", "-c", "user.email=test@example.test", "-c", "init.defaultBranch=main"]


@pytest.fixture(scope="module")
def bare_repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("isolation-git")
    work, bare = root / "work", root / "origin.git"
    subprocess.run([*GIT, "init", "--quiet", "--bare", str(bare)], check=True)
    subprocess.run([*GIT, "init", "--quiet", str(work)], check=True)
    (work / "file.txt").write_text("hello\n")
    subprocess.run([*GIT, "add", "file.txt"], cwd=work, check=True)
    subprocess.run([*GIT, "commit", "--quiet", "-m", "first"], cwd=work, check=True)
    subprocess.run([*GIT, "push", "--quiet", str(bare), "main"], cwd=work, check=True)
    return bare


@pytest.fixture
def strict_steps(sqlite_url, sqlite_sessions, tmp_path) -> StepActivities:
    """Steps of a worker whose operator did not allow private targets."""
    settings = make_test_settings(sqlite_url, tmp_path, notify_allow_private_targets=False,
                                  allow_private_targets=False)
    assert not settings.private_targets_allowed
    return StepActivities(settings, sqlite_sessions)


def workspace_entries(steps: StepActivities, run_id: int) -> list[str]:
    workspace = steps._settings.resolved_workspace_dir / f"run-{run_id}"
    return sorted(p.name for p in workspace.iterdir()) if workspace.exists() else []


@pytest.mark.parametrize(
    ("repository", "says"),
    [
        ("{bare}", "local path or file:// URL"),
        ("../../origin.git", "local path or file:// URL"),
        ("file://{bare}", "local path or file:// URL"),
        ("http://127.0.0.1:9/origin.git", "127.0.0.1 is a loopback, private or link-local address"),
        ("http://[::1]:9/origin.git", "::1 is a loopback, private or link-local address"),
        ("http://169.254.169.254/latest/meta-data/", "169.254.169.254 is a loopback, private or link-local"),
        ("https://10.1.2.3/team/app.git", "10.1.2.3 is a loopback, private or link-local address"),
        ("https://localhost/team/app.git", "'localhost' names this machine"),
        ("ssh://git@localhost/team/app.git", "'localhost' names this machine"),
        ("git@127.0.0.1:team/app.git", "127.0.0.1 is a loopback, private or link-local address"),
        ("http://2130706433/x.git", "resolves to 127.0.0.1, a loopback, private or link-local address"),
    ],
)
async def test_checkout_refuses_local_and_internal_repositories(strict_steps, rows, bare_repo, repository, says):
    repository = repository.format(bare=bare_repo)
    with pytest.raises(ApplicationError) as info:
        await ActivityEnvironment().run(strict_steps.checkout, step_input(rows, {"repository": repository}))
    err = info.value
    assert err.type == STEP_FAILED and err.non_retryable
    assert "`with.repository`" in err.message
    assert says in err.message
    assert "DEVOPS_ALLOW_PRIVATE_TARGETS=true" in err.message
    assert ".git" not in workspace_entries(strict_steps, rows.run_id)  # refused before git ran


@pytest.mark.parametrize("repository", ["ext::sh -c touch% /tmp/pwned", "fd::3", "ftp://example.com/x.git"])
async def test_checkout_refuses_remote_helpers_and_other_schemes_even_when_allowed(steps, rows, repository):
    assert steps._settings.private_targets_allowed
    with pytest.raises(ApplicationError) as info:
        await ActivityEnvironment().run(steps.checkout, step_input(rows, {"repository": repository}))
    assert info.value.type == STEP_FAILED and info.value.non_retryable
    assert "`with.repository`" in info.value.message


async def test_checkout_of_a_local_bare_repository_still_works_when_private_targets_are_allowed(
        steps, rows, bare_repo):
    assert steps._settings.private_targets_allowed
    result = await ActivityEnvironment().run(steps.checkout, step_input(rows, {"repository": str(bare_repo)}))
    assert len(result.outputs["commit"]) == 40
    workspace = steps._settings.resolved_workspace_dir / f"run-{rows.run_id}"
    assert (workspace / "file.txt").read_text() == "hello\n"


def test_git_is_pinned_to_the_checked_addresses_and_to_network_protocols():
    """The options that stop DNS rebinding (http(s)), redirects and file/ext transports."""
    import ipaddress

    options = _pinned_git_config("https://git.example.com/team/app.git",
                                 (ipaddress.ip_address("93.184.216.34"), ipaddress.ip_address("2606:2800::1")))
    pairs = [options[i + 1] for i in range(0, len(options), 2)]
    assert all(options[i] == "-c" for i in range(0, len(options), 2))
    assert "protocol.allow=never" in pairs and "protocol.file.allow=always" not in pairs
    assert "http.followRedirects=false" in pairs
    assert "http.curloptResolve=git.example.com:443:93.184.216.34,[2606:2800::1]" in pairs
    # ssh resolves the name itself: no pin, the protocol rules only
    assert not any("curloptResolve" in p for p in _pinned_git_config("git@example.com:team/app.git", ()))


def test_git_refuses_a_local_path_under_the_pinned_options(tmp_path, bare_repo):
    """Defence in depth: even a path the parser missed is refused by git itself."""
    options = _pinned_git_config("https://example.com/x.git", ())
    result = subprocess.run(["git", *options, "ls-remote", str(bare_repo)], cwd=tmp_path,
                            capture_output=True, text=True)
    assert result.returncode != 0 and "transport 'file' not allowed" in result.stderr


def test_a_public_literal_address_passes_the_repository_check():
    assert repository_check("https://93.184.216.34/x.git", allow_private=False).problem is None
    assert repository_check("/srv/repo.git", allow_private=True).problem is None


@pytest.mark.parametrize("image", ["localhost:5000/app", "127.0.0.1:5000/app", "10.0.0.5/app", "[::1]:5000/app",
                                   "169.254.169.254/x", "LOCALHOST/app"])
def test_image_references_to_internal_registries_are_refused_unless_allowed(image):
    problem = image_registry_problem(image, False)
    assert problem is not None and "DEVOPS_ALLOW_PRIVATE_TARGETS" in problem
    assert image_registry_problem(image, True) is None


@pytest.mark.parametrize("image", ["busybox", "local/busybox:latest", "library/nginx:1.27", "ghcr.io/team/app:1",
                                   "registry.invalid:5000/app"])
def test_docker_hub_public_and_unresolvable_registries_pass(image):
    assert image_registry_problem(image, False) is None


def test_the_http_pin_makes_git_connect_to_the_checked_address_not_a_new_lookup(tmp_path, bare_repo):
    """``pinned.invalid`` resolves nowhere: git reaches the served repository only through the
    pin, so a second (rebinding) DNS answer could not redirect it either."""
    import functools
    import ipaddress
    import threading
    from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer

    subprocess.run(["git", "update-server-info"], cwd=bare_repo, check=True)

    class Quiet(SimpleHTTPRequestHandler):
        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Quiet, directory=str(bare_repo.parent)))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = f"http://pinned.invalid:{server.server_address[1]}/{bare_repo.name}"
        env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "GIT_CONFIG_NOSYSTEM": "1", "GIT_TERMINAL_PROMPT": "0"}
        unpinned = subprocess.run(["git", "ls-remote", url], cwd=tmp_path, env=env, capture_output=True, text=True)
        assert unpinned.returncode != 0
        options = _pinned_git_config(url, (ipaddress.ip_address("127.0.0.1"),))
        pinned = subprocess.run(["git", *options, "ls-remote", url], cwd=tmp_path, env=env, capture_output=True,
                                text=True)
        assert pinned.returncode == 0, pinned.stderr
        assert "refs/heads/main" in pinned.stdout
    finally:
        server.shutdown()
