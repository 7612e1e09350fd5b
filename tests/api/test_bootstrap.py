"""``python -m api.bootstrap`` as operators run it, a subprocess against a fresh migrated SQLite
database: alone it creates the default account (its admin the operator) once; with
``create-account NAME EMAIL`` it prints the account, its admin and a token that the database
knows by hash, and refuses taken names and bad arguments."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest
from sqlalchemy import func, select

from api.auth import hash_token
from db.access_models import AuditEvent
from db.migrate import upgrade
from db.models import Account, ApiToken, User
from db.session import make_engine, make_session_factory

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def database(tmp_path: Path):
    url = f"sqlite:///{tmp_path / 'bootstrap.db'}"
    upgrade(url)
    engine = make_engine(url)
    yield url, tmp_path / "data", make_session_factory(engine)
    engine.dispose()


def run(database, *args: str) -> subprocess.CompletedProcess[str]:
    url, data_dir, _ = database
    env = {key: value for key, value in os.environ.items() if not key.startswith("DEVOPS_")}
    env.update(DEVOPS_DATABASE_URL=url, DEVOPS_DATA_DIR=str(data_dir), DEVOPS_ENVIRONMENT="test")
    return subprocess.run([sys.executable, "-m", "api.bootstrap", *args], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=120)


def user_of_token(sessions, token: str) -> User | None:
    with sessions() as session:
        row = session.scalar(select(ApiToken).where(ApiToken.token_hash == hash_token(token)))
        return None if row is None else row.user


def accounts(sessions) -> list[str]:
    with sessions() as session:
        return list(session.scalars(select(Account.name).order_by(Account.id)))


def test_bootstrap_alone_creates_the_default_account_once_with_an_operator_admin(database):
    _, data_dir, sessions = database
    first = run(database)
    assert first.returncode == 0, first.stderr
    token = first.stdout.strip().splitlines()[-1].strip()
    assert token.startswith("dvo_")
    token_file = data_dir / "admin.token"
    assert token_file.read_text().strip() == token
    assert stat.S_IMODE(token_file.stat().st_mode) == 0o600
    user = user_of_token(sessions, token)
    assert (user.email, user.role, user.is_operator) == ("admin@localhost", "admin", True)
    with sessions() as session:
        assert session.scalar(select(func.count()).select_from(AuditEvent)
                              .where(AuditEvent.action == "account.created")) == 1

    again = run(database)
    assert again.returncode == 0, again.stderr
    assert "accounts exist" in again.stdout and "dvo_" not in again.stdout
    assert accounts(sessions) == ["default"]
    assert token_file.read_text().strip() == token


def test_create_account_prints_the_account_its_admin_and_a_working_token(database):
    _, _, sessions = database
    result = run(database, "create-account", "Team A", "lead@example.com")
    assert result.returncode == 0, result.stderr
    body = json.loads(result.stdout)
    assert set(body) == {"account", "admin", "token"}
    assert body["account"]["name"] == "Team A"
    assert (body["admin"]["email"], body["admin"]["role"]) == ("lead@example.com", "admin")
    assert body["admin"]["is_operator"] is True  # the first account of the install
    token = body["token"]["token"]
    assert token.startswith("dvo_") and body["token"]["scopes"] == ["*"]
    user = user_of_token(sessions, token)
    assert user.id == body["admin"]["id"] and user.account_id == body["account"]["id"] and user.is_operator

    second = run(database, "create-account", "Team B", "b@example.com")
    assert second.returncode == 0, second.stderr
    other = json.loads(second.stdout)
    assert other["admin"]["is_operator"] is False
    assert user_of_token(sessions, other["token"]["token"]).account_id == other["account"]["id"]

    # bootstrap alone now finds accounts and creates none
    alone = run(database)
    assert alone.returncode == 0 and "accounts exist" in alone.stdout
    assert accounts(sessions) == ["Team A", "Team B"]


def test_create_account_refuses_a_taken_name_and_bad_arguments(database):
    _, _, sessions = database
    assert run(database, "create-account", "ops", "ops@example.com").returncode == 0
    taken = run(database, "create-account", "OPS", "x@example.com")
    assert taken.returncode == 1 and "already exists" in taken.stderr and taken.stdout == ""
    bad_email = run(database, "create-account", "new", "not-an-email")
    assert bad_email.returncode == 2 and "EMAIL" in bad_email.stderr
    blank = run(database, "create-account", " ", "a@example.com")
    assert blank.returncode == 2 and "NAME" in blank.stderr
    missing = run(database, "create-account", "only-a-name")
    assert missing.returncode == 2 and "EMAIL" in missing.stderr
    assert accounts(sessions) == ["ops"]
    with sessions() as session:
        assert session.scalar(select(func.count()).select_from(User)) == 1
