"""Run the Alembic migrations to head: ``python -m db.migrate`` (uses the settings' database)."""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config

from db.session import restrict_sqlite_file

MIGRATIONS_DIR = Path(__file__).parent / "migrations"


def alembic_config(database_url: str) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    cfg.set_main_option("sqlalchemy.url", database_url.replace("%", "%%"))
    return cfg


def upgrade(database_url: str) -> None:
    """Bring the database at ``database_url`` to the latest schema."""
    if database_url.startswith("sqlite:///"):
        Path(database_url.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
    if database_url.startswith("sqlite"):
        restrict_sqlite_file(database_url)  # Alembic's own engine would create it world-readable
    command.upgrade(alembic_config(database_url), "head")


def main() -> None:
    from settings import get_settings

    settings = get_settings()
    upgrade(settings.resolved_database_url)
    print(f"database migrated: {settings.resolved_database_url.split('@')[-1]}")


if __name__ == "__main__":
    main()
