from __future__ import annotations

import time

from fastapi.testclient import TestClient


def wait_ready(client: TestClient, timeout_s: float = 900.0) -> None:
    deadline = time.monotonic() + timeout_s
    while True:
        response = client.get("/readyz")
        if response.status_code == 200:
            return
        body = response.json()
        assert body.get("status") != "failed", body
        assert time.monotonic() < deadline, f"engine not ready after {timeout_s} s: {body}"
        time.sleep(0.2)
