"""The engine lock of the in-process engines (llama.cpp, transformers): when it is released, a
waiting interactive call goes before waiting batch calls, whatever order they came in."""

from __future__ import annotations

import threading
import time

from services.generator.engines.protocol import Priority, PriorityLock


def test_a_waiting_interactive_call_goes_before_waiting_batch_calls() -> None:
    lock = PriorityLock()
    order: list[str] = []

    def call(name: str, priority: Priority) -> None:
        with lock.hold(priority):
            order.append(name)

    with lock.hold("batch"):  # a batch call holds the engine while the others queue up
        threads = []
        for name, priority in [("batch 1", "batch"), ("batch 2", "batch"), ("team", "interactive")]:
            thread = threading.Thread(target=call, args=(name, priority))
            thread.start()
            threads.append(thread)
            time.sleep(0.05)  # in this order
    for thread in threads:
        thread.join(5)
    assert order == ["team", "batch 1", "batch 2"]
