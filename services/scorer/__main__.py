"""`python -m services.scorer`: serve the scorer with uvicorn (GOLD_SCORER_HOST / GOLD_SCORER_PORT)."""

from __future__ import annotations

import uvicorn

from services.scorer.config import get_scorer_settings
from services.scorer.main import create_app
from shared.logging import configure_logging, uvicorn_log_config


def main() -> None:
    settings = get_scorer_settings()
    configure_logging(settings.log_level, settings.log_format)
    uvicorn.run(
        create_app(settings),
        host=settings.scorer_host,
        port=settings.scorer_port,
        log_level="info",
        log_config=uvicorn_log_config(settings.log_format),
    )


if __name__ == "__main__":
    main()
