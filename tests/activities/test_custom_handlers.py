"""``type: custom`` steps: the handler registry, its two built-in handlers, and the activity
that runs them with logs and failures stored like any other step."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from temporalio.exceptions import ApplicationError
from temporalio.testing import ActivityEnvironment

from activities import custom_handlers
from activities.custom_handlers import CustomStepContext, CustomStepFailed, register_custom_handler
from activities.steps import STEP_FAILED, secret_placeholder
from db.crypto import SecretBox
from db.models import Secret
from tests.activities.conftest import TEST_SECRET_KEY, log_text, make_run_rows, step_input


@pytest.fixture
def registry() -> Iterator[None]:
    """Handlers a test registers are gone afterwards (the registry is process-wide)."""
    saved = dict(custom_handlers._HANDLERS)
    yield
    custom_handlers._HANDLERS.clear()
    custom_handlers._HANDLERS.update(saved)


async def run_custom(steps: Any, inp: Any) -> dict[str, Any]:
    return (await ActivityEnvironment().run(steps.custom, inp)).outputs


async def custom_failure(steps: Any, inp: Any) -> ApplicationError:
    with pytest.raises(ApplicationError) as info:
        await ActivityEnvironment().run(steps.custom, inp)
    assert info.value.type == STEP_FAILED and info.value.non_retryable
    return info.value


def write_files(root: Path, files: dict[str, bytes]) -> None:
    for name, content in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(content)


def test_builtin_handlers_are_registered():
    assert {"noop", "checksum"} <= set(custom_handlers.handler_names())
    assert custom_handlers.handler_names() == sorted(custom_handlers.handler_names())


async def test_noop_echoes_its_outputs(steps, rows):
    outputs = await run_custom(steps, step_input(rows, {"handler": "noop", "outputs": {"a": "1", "n": 2}}))
    assert outputs == {"a": "1", "n": 2}
    assert await run_custom(steps, step_input(rows, {"handler": "noop"})) == {}


async def test_noop_with_outputs_that_are_not_a_mapping_fails_clearly(steps, rows):
    err = await custom_failure(steps, step_input(rows, {"handler": "noop", "outputs": ["x"]}))
    assert "`outputs` must be a mapping" in err.message


async def test_checksum_is_stable_and_independent_of_creation_order(steps, sqlite_sessions):
    files = {"a.txt": b"alpha", "dir/b.bin": b"\x00\x01", "dir/sub/c.txt": b"gamma", ".hidden": b"h"}
    first, second = make_run_rows(sqlite_sessions), make_run_rows(sqlite_sessions)
    ws = steps._settings.resolved_workspace_dir
    write_files(ws / f"run-{first.run_id}", files)
    write_files(ws / f"run-{second.run_id}", dict(reversed(list(files.items()))))
    # version control and our own state do not count
    write_files(ws / f"run-{second.run_id}", {".git/HEAD": b"ref: x", ".devops/output-x-1": b"k=v",
                                               "sub/.git/config": b"[core]"})

    one = await run_custom(steps, step_input(first, {"handler": "checksum"}))
    two = await run_custom(steps, step_input(second, {"handler": "checksum"}))
    assert one == two
    assert one["files"] == 4 and len(one["sha256"]) == 64
    assert await run_custom(steps, step_input(first, {"handler": "checksum"})) == one


async def test_checksum_changes_with_content_and_names(steps, sqlite_sessions):
    async def checksum_of(files: dict[str, bytes], **params: Any) -> dict[str, Any]:
        rows = make_run_rows(sqlite_sessions)
        write_files(steps._settings.resolved_workspace_dir / f"run-{rows.run_id}", files)
        return await run_custom(steps, step_input(rows, {"handler": "checksum", **params}))

    base = await checksum_of({"a": b"1", "b": b"2"})
    assert (await checksum_of({"a": b"1", "b": b"3"}))["sha256"] != base["sha256"]
    assert (await checksum_of({"a": b"1", "c": b"2"}))["sha256"] != base["sha256"]
    # the boundary between one file's content and the next file's name is unambiguous
    assert (await checksum_of({"a": b"b\x002"}))["sha256"] != (await checksum_of({"a": b"", "b": b"2"}))["sha256"]
    only_txt = await checksum_of({"x.txt": b"1", "y.log": b"2", "d/z.txt": b"3"}, paths=["**/*.txt"])
    assert only_txt["files"] == 2
    assert (await checksum_of({"x.txt": b"1"}, paths="*.txt"))["files"] == 1


async def test_checksum_of_an_empty_or_missing_workspace(steps, rows):
    outputs = await run_custom(steps, step_input(rows, {"handler": "checksum"}))
    assert outputs["files"] == 0


@pytest.mark.parametrize("pattern", ["/etc/*", "../*", "a/../../*"])
async def test_checksum_refuses_patterns_outside_the_workspace(steps, rows, pattern):
    err = await custom_failure(steps, step_input(rows, {"handler": "checksum", "paths": [pattern]}))
    assert "must be relative to the workspace" in err.message


@pytest.mark.parametrize("name", ["nope", None, ""])
async def test_unknown_handler_fails_listing_the_registered_names(steps, rows, name):
    params = {"handler": name} if name is not None else {}
    err = await custom_failure(steps, step_input(rows, params))
    assert "registered: " in err.message
    for registered in custom_handlers.handler_names():
        assert registered in err.message


async def test_handler_raising_custom_step_failed_fails_the_step_with_its_message_and_log(
        steps, rows, sqlite_sessions, registry):
    @register_custom_handler("test_fails_after_logging")
    async def fails(ctx: CustomStepContext) -> dict[str, Any]:
        ctx.log("looked at the thing")
        ctx.log(f"step {ctx.step_id} attempt {ctx.attempt}")
        raise CustomStepFailed("the thing is broken")

    err = await custom_failure(steps, step_input(rows, {"handler": "test_fails_after_logging"}, step_id="c"))
    assert err.message == "the thing is broken"
    assert log_text(sqlite_sessions, rows.run_id, "c").splitlines() == [
        "looked at the thing", "step c attempt 1", "[devops] the thing is broken"]


async def test_handler_sees_resolved_secrets_and_its_output_log_and_error_are_masked(
        steps, rows, sqlite_sessions, registry):
    with sqlite_sessions.begin() as session:
        session.add(Secret(account_id=rows.account_id, name="API_KEY",
                           encrypted_value=SecretBox(TEST_SECRET_KEY).encrypt("key-value-123")))

    @register_custom_handler("test_leaky")
    async def leaky(ctx: CustomStepContext) -> dict[str, Any]:
        key = ctx.params["key"]
        assert key == "key-value-123" and ctx.env["KEY"] == "key-value-123"
        ctx.log(f"using {key}")
        if ctx.params.get("fail"):
            raise CustomStepFailed(f"rejected {key}")
        return {"echo": key, "nested": [{"k": key}]}

    placeholder = secret_placeholder("__X_", "API_KEY")
    common = {"env": {"KEY": placeholder}, "secret_names": ["API_KEY"], "secret_placeholder_prefix": "__X_"}
    outputs = await run_custom(steps, step_input(rows, {"handler": "test_leaky", "key": placeholder}, **common))
    assert outputs == {"echo": "***", "nested": [{"k": "***"}]}

    err = await custom_failure(steps, step_input(rows, {"handler": "test_leaky", "key": placeholder,
                                                        "fail": True}, step_id="f", **common))
    assert err.message == "rejected ***"
    log = log_text(sqlite_sessions, rows.run_id) + log_text(sqlite_sessions, rows.run_id, "f")
    assert "key-value-123" not in log and "using ***" in log


async def test_handler_raising_another_error_is_left_to_temporal_retries(steps, rows, registry):
    @register_custom_handler("test_crashes")
    async def crashes(ctx: CustomStepContext) -> dict[str, Any]:
        raise ConnectionError("database went away")

    with pytest.raises(ConnectionError):
        await ActivityEnvironment().run(steps.custom, step_input(rows, {"handler": "test_crashes"}))
