"""``Settings``: one pydantic-settings object, overridable by ``DEVOPS_*`` environment variables,
that refuses the development secret key outside development and test."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from pydantic import ValidationError

from db.crypto import SecretBox
from settings import DEVELOPMENT_SECRET_KEY, Settings

REAL_KEY = "a-long-random-production-key-0123456789"


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """The suite's own DEVOPS_* variables must not leak into these tests."""
    for name in list(os.environ):
        if name.startswith("DEVOPS_"):
            monkeypatch.delenv(name)


@pytest.mark.parametrize("environment", ["production", "staging"])
def test_default_secret_key_is_refused_outside_development(environment):
    with pytest.raises(ValidationError) as info:
        Settings(environment=environment)
    assert "DEVOPS_SECRET_KEY" in str(info.value)


def test_default_secret_key_from_the_environment_is_refused_in_production(monkeypatch):
    monkeypatch.setenv("DEVOPS_ENVIRONMENT", "production")
    with pytest.raises(ValidationError) as info:
        Settings()
    assert "DEVOPS_SECRET_KEY" in str(info.value)
    monkeypatch.setenv("DEVOPS_SECRET_KEY", REAL_KEY)
    assert Settings().secret_key == REAL_KEY


@pytest.mark.parametrize("environment", ["development", "test"])
def test_default_secret_key_is_accepted_in_development_and_test(environment):
    assert Settings(environment=environment).secret_key == DEVELOPMENT_SECRET_KEY


def test_a_short_secret_key_is_refused():
    with pytest.raises(ValidationError) as info:
        Settings(environment="production", secret_key="short")
    assert "DEVOPS_SECRET_KEY must be at least 16 characters" in str(info.value)


def test_environment_variables_override_defaults(monkeypatch, tmp_path):
    monkeypatch.setenv("DEVOPS_API_PORT", "9000")
    monkeypatch.setenv("DEVOPS_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("DEVOPS_NOTIFY_ALLOW_PRIVATE_TARGETS", "true")
    settings = Settings()
    assert settings.api_port == 9000
    assert settings.data_dir == tmp_path
    assert settings.notify_allow_private_targets is True


def test_explicit_arguments_win_over_the_environment(monkeypatch):
    monkeypatch.setenv("DEVOPS_API_PORT", "9000")
    assert Settings(api_port=9100).api_port == 9100


def test_resolved_database_url_defaults_to_a_sqlite_file_under_data_dir(tmp_path):
    settings = Settings(data_dir=tmp_path / "data")
    assert settings.resolved_database_url == f"sqlite:///{(tmp_path / 'data' / 'devops.db').resolve()}"


def test_resolved_database_url_relative_data_dir_becomes_absolute(monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    url = Settings().resolved_database_url
    assert url == f"sqlite:///{tmp_path.resolve() / '.data' / 'devops.db'}"
    assert Path(url.removeprefix("sqlite:///")).is_absolute()


def test_an_explicit_database_url_is_used_as_is(monkeypatch):
    monkeypatch.setenv("DEVOPS_DATABASE_URL", "postgresql+psycopg://u@db.example:5432/devops")
    assert Settings().resolved_database_url == "postgresql+psycopg://u@db.example:5432/devops"


def test_workspace_dir_defaults_under_data_dir(tmp_path):
    assert Settings(data_dir=tmp_path).resolved_workspace_dir == (tmp_path / "workspaces").resolve()
    assert Settings(data_dir=tmp_path, workspace_dir=tmp_path / "ws").resolved_workspace_dir == tmp_path / "ws"


def test_temporal_ui_url_defaults_to_the_local_ui_port():
    assert Settings(temporal_ui_port=8300).resolved_temporal_ui_url == "http://127.0.0.1:8300"
    assert Settings(temporal_ui_url="https://temporal.example/").resolved_temporal_ui_url == "https://temporal.example"


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("previous-key-0123456789", ["previous-key-0123456789"]),
        ("key-one-0123456789,key-two-0123456789", ["key-one-0123456789", "key-two-0123456789"]),
        ('["key-one-0123456789", "key-two-0123456789"]', ["key-one-0123456789", "key-two-0123456789"]),
        ("", []),
    ],
)
def test_old_secret_keys_from_the_environment(monkeypatch, value, expected):
    # The documented rotation: move the previous DEVOPS_SECRET_KEY value into DEVOPS_OLD_SECRET_KEYS.
    monkeypatch.setenv("DEVOPS_OLD_SECRET_KEYS", value)
    assert Settings().old_secret_keys == expected


def test_rotation_through_settings_decrypts_old_values(monkeypatch):
    token = SecretBox("previous-key-0123456789").encrypt("kept")
    monkeypatch.setenv("DEVOPS_SECRET_KEY", REAL_KEY)
    monkeypatch.setenv("DEVOPS_OLD_SECRET_KEYS", "previous-key-0123456789")
    settings = Settings()
    assert SecretBox(settings.secret_key, settings.old_secret_keys).decrypt(token) == "kept"
