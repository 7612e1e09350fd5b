"""Engine and session factory, made once per process from the settings and injected."""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

from sqlalchemy import Engine, create_engine, event, make_url
from sqlalchemy.orm import Session, sessionmaker

SQLITE_COMPANIONS = ("", "-wal", "-shm", "-journal")


def restrict_sqlite_file(url: str) -> None:
    """Make a SQLite database file the service user's only (0600) before anything opens it: it
    holds token hashes, encrypted secrets and every account's data, and a step user or another
    local account must not read it. SQLite gives its -wal/-shm/-journal files the database
    file's mode; those already there (from before this rule) are tightened too."""
    parsed = make_url(url)
    database = parsed.database
    if parsed.get_backend_name() != "sqlite" or not database or database == ":memory:" or \
            database.startswith("file:") or parsed.query.get("uri"):
        return
    path = Path(database)
    if not path.parent.is_dir():
        return  # SQLite will say so itself
    with contextlib.suppress(FileExistsError):
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
    for suffix in SQLITE_COMPANIONS:
        companion = path.with_name(path.name + suffix)
        with contextlib.suppress(FileNotFoundError, PermissionError):  # not ours: its owner decides
            if companion.stat().st_mode & 0o077:
                companion.chmod(0o600)


def make_engine(url: str) -> Engine:
    """An engine tuned for the backend: SQLite in WAL mode with a busy timeout, so the API and
    the worker can write the same file; PostgreSQL through psycopg 3 with a modest pool."""
    if url.startswith("sqlite"):
        restrict_sqlite_file(url)
        engine = create_engine(url, connect_args={"check_same_thread": False, "timeout": 30})

        @event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_conn, _record):  # noqa: ANN001
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA synchronous=NORMAL")
            cur.execute("PRAGMA foreign_keys=ON")
            cur.execute("PRAGMA busy_timeout=30000")
            cur.close()

        return engine
    return create_engine(url, pool_size=10, max_overflow=20, pool_pre_ping=True)


def make_session_factory(engine: Engine) -> sessionmaker[Session]:
    return sessionmaker(engine, expire_on_commit=False)
