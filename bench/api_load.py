"""Load on the orchestrator API: 200 concurrent clients on loopback for a bounded time, reading run
status and sample pages and submitting runs, against real PostgreSQL and Redis.

Baseline in the same run: the orchestrator process also serves a bare endpoint, `/floor/{id}`, that
reads one run row by primary key through the same database pool and returns it as JSON, with no
authentication, ORM or response model: the floor of a status read on this stack. The same clients
read it and the status route (`GET /runs/{id}`), each for `--seconds` in two halves (floor, status,
status, floor: see `abba`), then a mix of status reads, sample pages and submissions.
Targets: the status route's throughput >= 0.8 x the floor's (`status_floor_ratio`), its p99 at 200
clients <= 1 s (`p99_ms`), no errors. Ends with one JSON object.

The clients are aiohttp's: httpx's AsyncClient spent a whole core of its own on 200 connections here
(20 CPU-seconds in a 20 s run, the server 2-7), so the bench measured its own client, not the server.

    .venv/bin/python bench/api_load.py [--clients 200] [--seconds 20] [--api-processes 1]

`--api-processes N` starts N API-only orchestrators (GOLD_CONCURRENT_RUNS=0, as API replicas run
behind a load balancer) on one database; client i talks to process i mod N. Each is this script
with `--serve`: the orchestrator's app, as `python -m services.orchestrator` serves it, plus the floor.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import aiohttp
import httpx
from fastapi import FastAPI, Request, Response
from sqlalchemy import bindparam, select

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from services.orchestrator.config import get_orchestrator_settings  # noqa: E402
from services.orchestrator.main import create_app  # noqa: E402
from shared.db.migrate import upgrade  # noqa: E402
from shared.db.models import Run  # noqa: E402
from shared.local_servers import start_postgres, start_redis  # noqa: E402
from shared.logging import configure_logging  # noqa: E402
from shared.service_app import serve  # noqa: E402

TOKEN = "bench-token"
SPEC = {
    "name": "load",
    "task": {
        "type": "classification",
        "description": "Sentiment of a movie review.",
        "input_fields": ["text"],
        "output_field": "label",
        "labels": ["negative", "positive"],
        "seed_examples": [
            {"text": "Wonderful from start to finish.", "label": "positive"},
            {"text": "A tedious, joyless slog.", "label": "negative"},
        ],
    },
}


def add_floor(app: FastAPI) -> None:
    """`GET /floor/{run_id}`: one run row by primary key, on a connection of the pool the status route
    reads with (app.state.read_engine, autocommit: one SELECT, no BEGIN/COMMIT), as plain JSON."""
    table = Run.__table__
    query = select(table).where(table.c.id == bindparam("run_id"))

    # A plain def, as the status route is: both run in the same thread pool.
    def floor(run_id: uuid.UUID, request: Request) -> Response:
        with request.app.state.read_engine.connect() as connection:
            row = connection.execute(query, {"run_id": run_id}).mappings().one_or_none()
        if row is None:
            return Response(status_code=404)
        return Response(json.dumps(dict(row), default=str), media_type="application/json")

    app.add_api_route("/floor/{run_id}", floor, methods=["GET"])


def serve_with_floor() -> None:
    settings = get_orchestrator_settings()
    configure_logging(settings.log_level, settings.log_format)
    app = create_app(settings)
    add_floor(app)
    serve(app, settings, settings.orchestrator_host, settings.orchestrator_port)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_until_up(url: str) -> None:
    for _ in range(100):
        try:
            if httpx.get(f"{url}/healthz", timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            time.sleep(0.2)
    raise SystemExit(f"{url} did not start")


def p50_p99_ms(latencies: list[float]) -> tuple[float, float]:
    """Median and 99th percentile (nearest rank below) of latencies in seconds, in milliseconds."""
    ordered = sorted(latencies)
    return 1000 * statistics.median(ordered), 1000 * ordered[int(0.99 * (len(ordered) - 1))]


async def drive(urls: list[str], clients: int, seconds: float, mix: list[str], run_ids: list[str]) -> dict:
    latencies: list[float] = []
    errors: dict[str, int] = {}
    deadline = time.monotonic() + seconds
    connector = aiohttp.TCPConnector(limit=clients)
    timeout = aiohttp.ClientTimeout(total=30.0)
    headers = {"Authorization": f"Bearer {TOKEN}"}
    async with aiohttp.ClientSession(headers=headers, connector=connector, timeout=timeout) as client:

        async def request(url: str, kind: str, rng: random.Random) -> int:
            if kind == "floor":
                call = client.get(f"{url}/floor/{rng.choice(run_ids)}")
            elif kind == "status":
                call = client.get(f"{url}/runs/{rng.choice(run_ids)}")
            elif kind == "samples":
                call = client.get(f"{url}/runs/{rng.choice(run_ids)}/samples", params={"limit": 50})
            else:
                call = client.post(f"{url}/runs", json=SPEC)
            async with call as response:
                await response.read()
                return response.status

        async def one_client(seed: int) -> None:
            rng, url = random.Random(seed), urls[seed % len(urls)]
            while time.monotonic() < deadline:
                kind = rng.choice(mix)
                started = time.perf_counter()
                try:
                    status = await request(url, kind, rng)
                    ok, key = status < 400, f"{kind}:{status}"
                except (aiohttp.ClientError, TimeoutError) as exc:
                    ok, key = False, f"{kind}:{type(exc).__name__}"
                latencies.append(time.perf_counter() - started)
                if not ok:
                    errors[key] = errors.get(key, 0) + 1

        started = time.monotonic()
        await asyncio.gather(*(one_client(i) for i in range(clients)))
        elapsed = time.monotonic() - started
    return figures_of(latencies, elapsed, errors)


def figures_of(latencies: list[float], elapsed: float, errors: dict[str, int]) -> dict:
    p50_ms, p99_ms = p50_p99_ms(latencies)
    return {
        "requests": len(latencies),
        "requests_per_s": len(latencies) / elapsed,
        "p50_ms": p50_ms,
        "p99_ms": p99_ms,
        "errors": sum(errors.values()),
        "error_kinds": errors,
        "latencies": latencies,
        "elapsed": elapsed,
    }


def abba(urls: list[str], clients: int, seconds: float, run_ids: list[str]) -> tuple[dict, dict]:
    """The floor and the status route, each for `seconds` in two halves, in the order floor, status,
    status, floor: on a machine shared with other work, a load that drifts during the bench weighs
    on both alike instead of on whichever phase came second."""
    halves: dict[str, list[dict]] = {"floor": [], "status": []}
    for kind in ("floor", "status", "status", "floor"):
        halves[kind].append(asyncio.run(drive(urls, clients, seconds / 2, [kind], run_ids)))

    def merged(parts: list[dict]) -> dict:
        errors: dict[str, int] = {}
        for part in parts:
            for key, n in part["error_kinds"].items():
                errors[key] = errors.get(key, 0) + n
        return figures_of(
            [x for part in parts for x in part["latencies"]], sum(part["elapsed"] for part in parts), errors
        )

    return merged(halves["floor"]), merged(halves["status"])


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--clients", type=int, default=200)
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--api-processes", type=int, default=1)
    parser.add_argument("--serve", action="store_true", help="be one orchestrator with the floor (internal)")
    args = parser.parse_args()
    if args.serve:
        serve_with_floor()
        return

    work = Path(tempfile.mkdtemp(prefix="gold-load-"))
    postgres, redis = start_postgres(work / "pg"), start_redis(work / "redis")
    upgrade(postgres.url)
    env = {
        **os.environ,
        "GOLD_DATABASE_URL": postgres.url,
        "GOLD_REDIS_URL": redis.url,
        "GOLD_API_KEYS": json.dumps({"bench": TOKEN}),
        "GOLD_CONCURRENT_RUNS": "0",  # API only: nobody drives the submitted runs
        "GOLD_DATA_DIR": str(work),
        "GOLD_LOG_LEVEL": "WARNING",
    }
    ports = [free_port() for _ in range(args.api_processes)]
    servers = [
        subprocess.Popen(
            [sys.executable, str(Path(__file__).resolve()), "--serve"],
            env={**env, "GOLD_ORCHESTRATOR_PORT": str(port)},
            cwd=ROOT,
        )
        for port in ports
    ]
    urls = [f"http://127.0.0.1:{port}" for port in ports]
    try:
        for url in urls:
            wait_until_up(url)
        headers = {"Authorization": f"Bearer {TOKEN}"}
        submit = f"{urls[0]}/runs"
        run_ids = [httpx.post(submit, json=SPEC, headers=headers, timeout=10).json()["id"] for _ in range(20)]
        floor, reads = abba(urls, args.clients, args.seconds, run_ids)
        mixed = asyncio.run(
            drive(urls, args.clients, args.seconds, ["status"] * 6 + ["samples"] * 3 + ["submit"], run_ids)
        )
    finally:
        for server in servers:
            server.terminate()
        for server in servers:
            server.wait(timeout=20)
        redis.stop()
        postgres.stop()
    phases = {"floor": floor, "status": reads, "mixed": mixed}
    for name, figures in phases.items():
        print(
            f"{name}: {figures['requests_per_s']:.0f} req/s, p50 {figures['p50_ms']:.1f} ms, "
            f"p99 {figures['p99_ms']:.1f} ms, errors {figures['errors']} {figures['error_kinds']}"
        )
    print(
        json.dumps(
            {
                "clients": args.clients,
                "api_processes": args.api_processes,
                "seconds": args.seconds,
                "floor_requests_per_s": round(floor["requests_per_s"], 1),
                "status_requests_per_s": round(reads["requests_per_s"], 1),
                "status_p50_ms": round(reads["p50_ms"], 1),
                "mixed_requests_per_s": round(mixed["requests_per_s"], 1),
                "mixed_p50_ms": round(mixed["p50_ms"], 1),
                "mixed_p99_ms": round(mixed["p99_ms"], 1),
                "mixed_errors": mixed["errors"],
                # The targets: status reads against the floor (>= 0.8), their p99 (<= 1000), no errors.
                "status_floor_ratio": round(reads["requests_per_s"] / floor["requests_per_s"], 3),
                "p99_ms": round(reads["p99_ms"], 1),
                "errors": sum(figures["errors"] for figures in phases.values()),
            }
        )
    )


if __name__ == "__main__":
    main()
