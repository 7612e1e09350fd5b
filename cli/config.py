"""Where the CLI finds the API and its token.

Each setting comes from the first of: the command-line option (``--api-url``, ``--token``), the
environment (``DEVOPS_API_URL``, ``DEVOPS_TOKEN``), the config file
(``$XDG_CONFIG_HOME/devops/config.toml``, else ``~/.config/devops/config.toml``; a
``config.json`` beside it is read when there is no TOML file). ``devops login`` writes the TOML
file, readable by its owner only (0600 in a 0700 directory), since it holds a token.
"""

from __future__ import annotations

import json
import os
import tomllib
from dataclasses import dataclass
from pathlib import Path

DEFAULT_API_URL = "http://127.0.0.1:8000"
API_PREFIX = "/api/v1/devops"


class ConfigError(Exception):
    """The config file exists but cannot be read or parsed."""


@dataclass(frozen=True)
class Config:
    api_url: str
    token: str | None

    @property
    def base_url(self) -> str:
        """The API's base, ``<url>/api/v1/devops``, whether or not the URL already ends so."""
        url = self.api_url.rstrip("/")
        return url if url.endswith(API_PREFIX) else url + API_PREFIX


def config_dir() -> Path:
    root = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(root) / "devops"


def config_path() -> Path:
    return config_dir() / "config.toml"


def read_file() -> dict[str, str]:
    """The settings stored in the config file (TOML, else JSON); empty when there is none."""
    toml_path, json_path = config_path(), config_dir() / "config.json"
    try:
        if toml_path.is_file():
            data = tomllib.loads(toml_path.read_text(encoding="utf-8"))
        elif json_path.is_file():
            data = json.loads(json_path.read_text(encoding="utf-8"))
        else:
            return {}
    except (OSError, ValueError) as exc:
        raise ConfigError(f"cannot read the config file in {config_dir()}: {exc}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"the config file in {config_dir()} must hold a table of settings")
    return {key: str(data[key]) for key in ("api_url", "token") if data.get(key) is not None}


def resolve(api_url: str | None, token: str | None) -> Config:
    """Options (already merged with the environment by typer) first, then the file."""
    stored = read_file() if api_url is None or token is None else {}
    return Config(api_url=api_url or stored.get("api_url") or DEFAULT_API_URL,
                  token=token or stored.get("token"))


def _toml_string(value: str) -> str:
    # A JSON string is a valid TOML basic string (same escapes), and json.dumps escapes controls.
    return json.dumps(value, ensure_ascii=True)


def write_file(api_url: str, token: str) -> Path:
    """Store the URL and token, owner-only: the directory 0700, the file 0600 from its creation."""
    directory = config_dir()
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    directory.chmod(0o700)
    path = config_path()
    text = f"api_url = {_toml_string(api_url)}\ntoken = {_toml_string(token)}\n"
    partial = path.with_suffix(".toml.tmp")
    descriptor = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.fchmod(descriptor, 0o600)  # an older file of the same name may have had other bits
        os.write(descriptor, text.encode("utf-8"))
    finally:
        os.close(descriptor)
    os.replace(partial, path)
    return path
