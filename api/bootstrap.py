"""First start and scripted account creation.

``python -m api.bootstrap``: on an empty database, create the default account and its admin (the
install's operator, ``is_operator``) with an API token, printed once and saved to
``<data dir>/admin.token`` (mode 0600). Later starts find the account and print nothing secret.

``python -m api.bootstrap create-account NAME EMAIL``: a new account with its first admin, as
``POST /accounts`` does; prints the same JSON (``{account, admin, token}``, the token once).
Exit status 1 when the name is taken, 2 for bad arguments. The first account created on an
empty database this way is the operator's too.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

from api.auth import issue_token
from api.token_schemas import TokenCreated
from api.user_schemas import AccountPublic, UserPublic
from db.session import make_engine, make_session_factory
from domain import access
from domain.errors import Conflict
from services import accounts as account_service
from services import audit
from services.users import email_problem
from settings import get_settings

DEFAULT_ACCOUNT = "default"
DEFAULT_ADMIN_EMAIL = "admin@localhost"
ACTOR = audit.Actor(name="bootstrap")


def _sessions():  # noqa: ANN202
    settings = get_settings()
    return settings, make_session_factory(make_engine(settings.resolved_database_url))


def bootstrap_default() -> None:
    settings, sessions = _sessions()
    token_file = settings.data_dir / "admin.token"
    with sessions.begin() as session:
        if account_service.any_account(session):
            print(f"accounts exist; the first admin token was saved to {token_file} on first start")
            return
        _account, user = account_service.create_account(session, ACTOR, name=DEFAULT_ACCOUNT,
                                                        admin_email=DEFAULT_ADMIN_EMAIL, is_operator=True)
        issued = issue_token(session, user, "default", scopes=[access.ALL])
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    fd = os.open(token_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(issued.token + "\n")
    os.chmod(token_file, 0o600)
    print("created account 'default' with admin user admin@localhost")
    print(f"admin API token (shown once, also saved to {token_file}):\n  {issued.token}")


def create_account(name: str, email: str) -> int:
    name, email = name.strip(), email.strip()
    if not name or len(name) > 200:
        print("error: NAME must be 1 to 200 characters", file=sys.stderr)
        return 2
    problem = email_problem(email)
    if problem:
        print(f"error: EMAIL {problem}", file=sys.stderr)
        return 2
    _settings, sessions = _sessions()
    try:
        with sessions.begin() as session:
            first = not account_service.any_account(session)
            account, user = account_service.create_account(session, ACTOR, name=name, admin_email=email,
                                                           is_operator=first)
            issued = issue_token(session, user, "first token", scopes=[access.ALL])
            answer = {"account": AccountPublic.of(account).model_dump(mode="json"),
                      "admin": UserPublic.of(user).model_dump(mode="json"),
                      "token": TokenCreated.of_issued(issued.row, issued.token).model_dump(mode="json")}
    except Conflict as exc:
        print(f"error: {exc.detail}", file=sys.stderr)
        return 1
    print(json.dumps(answer, indent=2))
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m api.bootstrap", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command")
    create = commands.add_parser("create-account", help="create an account with its first admin; prints its token once")
    create.add_argument("name", metavar="NAME")
    create.add_argument("email", metavar="EMAIL")
    args = parser.parse_args(argv)
    if args.command == "create-account":
        return create_account(args.name, args.email)
    bootstrap_default()
    return 0


if __name__ == "__main__":
    sys.exit(main())
