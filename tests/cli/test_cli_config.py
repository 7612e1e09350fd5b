"""Where the CLI's settings come from: option, then environment, then the config file; and
``write_file`` keeps the token owner-only."""

from __future__ import annotations

import json
import stat

import pytest

from cli import config


@pytest.fixture
def config_home(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path))
    return tmp_path / "devops"


def test_the_file_fills_what_options_and_environment_leave_unset(config_home):
    assert config.resolve(None, None) == config.Config(api_url=config.DEFAULT_API_URL, token=None)
    config.write_file("http://ci.example:8000", 'dvo_"quoted"\\token')
    assert config.resolve(None, None) == config.Config(api_url="http://ci.example:8000", token='dvo_"quoted"\\token')
    assert config.resolve("http://other:1", None).token == 'dvo_"quoted"\\token'
    assert config.resolve("http://other:1", "dvo_given") == config.Config(api_url="http://other:1", token="dvo_given")


def test_the_file_is_0600_in_a_0700_directory_even_over_a_looser_one(config_home):
    config_home.mkdir(mode=0o755)
    (config_home / "config.toml").write_text("token = 'old'\n")
    (config_home / "config.toml").chmod(0o644)
    path = config.write_file("http://a:1", "dvo_t")
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(config_home.stat().st_mode) == 0o700


def test_a_json_file_is_read_and_a_broken_one_is_a_clear_error(config_home):
    config_home.mkdir()
    (config_home / "config.json").write_text(json.dumps({"api_url": "http://json:2", "token": "dvo_j"}))
    assert config.resolve(None, None) == config.Config(api_url="http://json:2", token="dvo_j")
    (config_home / "config.toml").write_text("api_url = \n")
    with pytest.raises(config.ConfigError, match="cannot read the config file"):
        config.resolve(None, None)


def test_the_api_prefix_is_added_once():
    assert config.Config("http://h:8000/", None).base_url == "http://h:8000/api/v1/devops"
    assert config.Config("http://h:8000/api/v1/devops/", None).base_url == "http://h:8000/api/v1/devops"
