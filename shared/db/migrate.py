"""Apply the one Alembic history (used by the launcher, the compose migration service and tests)."""

from __future__ import annotations

import sys
from pathlib import Path

from alembic import command
from alembic.config import Config

MIGRATIONS = Path(__file__).with_name("migrations")


def alembic_config(url: str) -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return config


def upgrade(url: str, revision: str = "head") -> None:
    command.upgrade(alembic_config(url), revision)


if __name__ == "__main__":  # python -m shared.db.migrate  (the compose one-shot service)
    from shared.settings import get_settings

    upgrade(get_settings().require_database_url())
    sys.exit(0)
