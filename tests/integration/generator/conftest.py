from __future__ import annotations

import time

from fastapi.testclient import TestClient

# What the real teacher engines are asked in their tests (test_vllm.py, test_llamacpp.py).
SENTIMENT_CASES = [
    ("An absolute delight from start to finish, I loved every minute.", "positive"),
    ("A wonderful, moving film with brilliant acting.", "positive"),
    ("One of the best movies I have seen this year.", "positive"),
    ("Boring, predictable and far too long. I regret watching it.", "negative"),
    ("The worst film of the decade: awful acting and a stupid plot.", "negative"),
    ("A tedious mess that wastes a good cast.", "negative"),
]
SQUAD_CASES = [
    (
        "The museum on Hale Street opened in 1958 and moved to the harbour in 1990.",
        "When did the museum open?",
        "1958",
    ),
    (
        "Tomas Berg plays the cello in the city orchestra and teaches on weekends.",
        "What instrument does Tomas Berg play?",
        "cello",
    ),
    (
        "The village of Orrin lies at the foot of Mount Caddo, beside a cold lake.",
        "Which mountain is Orrin at the foot of?",
        "Mount Caddo",
    ),
    (
        "Green tea leaves are steamed soon after picking, while black tea leaves are left to oxidise.",
        "What happens to green tea leaves after picking?",
        "steamed",
    ),
]


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
