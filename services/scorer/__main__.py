"""`python -m services.scorer`: serve the scorer with uvicorn (GOLD_SCORER_HOST / GOLD_SCORER_PORT)."""

from __future__ import annotations

from services.scorer.config import get_scorer_settings
from services.scorer.main import create_app
from shared.logging import configure_logging
from shared.service_app import serve


def main() -> None:
    settings = get_scorer_settings()
    configure_logging(settings.log_level, settings.log_format)
    serve(create_app(settings), settings, settings.scorer_host, settings.scorer_port)


if __name__ == "__main__":
    main()
