"""Small things several test modules share."""

from __future__ import annotations

import socket

SENTIMENT_TASK = {
    "type": "classification",
    "description": "Decide whether a movie review is positive or negative.",
    "input_fields": ["text"],
    "output_field": "label",
    "labels": ["negative", "positive"],
    "seed_examples": [
        {"text": "A delightful, moving film with wonderful performances.", "label": "positive"},
        {"text": "Boring, predictable and far too long for its thin story.", "label": "negative"},
        {"text": "The best comedy I have seen in years, sharp and kind.", "label": "positive"},
        {"text": "Wooden acting and a script full of clumsy clichés.", "label": "negative"},
    ],
}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]
