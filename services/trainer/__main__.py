"""`python -m services.trainer [--burst]`: one trainer worker (run one per GPU)."""

from __future__ import annotations

import argparse
import sys

from services.trainer.config import get_trainer_settings
from services.trainer.worker import run_worker
from shared.logging import configure_logging


def main() -> int:
    parser = argparse.ArgumentParser(description="GOLD trainer: RQ worker on the 'train' queue")
    parser.add_argument("--burst", action="store_true", help="exit when the queue is empty")
    args = parser.parse_args()
    settings = get_trainer_settings()
    configure_logging(settings.log_level, settings.log_format)
    run_worker(settings, burst=args.burst)
    return 0


if __name__ == "__main__":
    sys.exit(main())
