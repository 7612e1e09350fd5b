"""First start: create the default account and an admin API token (``python -m api.bootstrap``).

The token is printed once and saved to ``<data dir>/admin.token`` (mode 0600). Later starts
find the account and print nothing secret.
"""

from __future__ import annotations

import os

from sqlalchemy import select

from api.auth import create_account_with_admin
from db.models import Account
from db.session import make_engine, make_session_factory
from settings import get_settings

DEFAULT_ACCOUNT = "default"
DEFAULT_ADMIN_EMAIL = "admin@localhost"


def main() -> None:
    settings = get_settings()
    engine = make_engine(settings.resolved_database_url)
    sessions = make_session_factory(engine)
    token_file = settings.data_dir / "admin.token"
    with sessions.begin() as session:
        if session.scalar(select(Account.id).limit(1)) is not None:
            print(f"accounts exist; the first admin token was saved to {token_file} on first start")
            return
        _account, _user, issued = create_account_with_admin(session, DEFAULT_ACCOUNT, DEFAULT_ADMIN_EMAIL)
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    fd = os.open(token_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(issued.token + "\n")
    os.chmod(token_file, 0o600)
    print("created account 'default' with admin user admin@localhost")
    print(f"admin API token (shown once, also saved to {token_file}):\n  {issued.token}")


if __name__ == "__main__":
    main()
