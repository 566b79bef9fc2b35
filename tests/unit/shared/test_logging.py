"""shared/logging.py: text lines as before, JSON lines that parse and carry log_context's fields."""

from __future__ import annotations

import io
import json
import logging
import threading

from shared.logging import TEXT_FORMAT, log_context, make_handler


def _capture(log_format: str) -> tuple[logging.Logger, io.StringIO]:
    stream = io.StringIO()
    handler = make_handler(log_format)  # type: ignore[arg-type]
    handler.setStream(stream)
    logger = logging.getLogger(f"test.logging.{log_format}")
    logger.handlers[:] = [handler]
    logger.setLevel(logging.INFO)
    logger.propagate = False
    return logger, stream


def test_json_lines_parse_and_carry_the_bound_fields():
    logger, stream = _capture("json")
    logger.info("outside")
    with log_context(run_id="r1", iteration=2):
        with log_context(stage="train"):
            logger.warning("inside %s", "step")
        logger.info("after the step")
    lines = [json.loads(line) for line in stream.getvalue().splitlines()]
    assert [r["message"] for r in lines] == ["outside", "inside step", "after the step"]
    assert "run_id" not in lines[0]
    expected = {
        "levelname": "WARNING",
        "name": "test.logging.json",
        "message": "inside step",
        "run_id": "r1",
        "iteration": 2,
        "stage": "train",
    }
    # other libraries may add record fields (vLLM's record factory adds vllm_process_name once imported)
    assert {key: lines[1].get(key) for key in expected} == expected and "timestamp" in lines[1]
    assert lines[2]["iteration"] == 2 and "stage" not in lines[2]


def test_json_lines_carry_exceptions_and_fields_stay_in_their_thread():
    logger, stream = _capture("json")
    with log_context(run_id="r1"):
        try:
            raise ValueError("boom")
        except ValueError:
            logger.exception("failed")
        other = threading.Thread(target=lambda: logger.info("another thread"))
        other.start()
        other.join()
    failed, elsewhere = (json.loads(line) for line in stream.getvalue().splitlines())
    assert "ValueError: boom" in failed["exc_info"] and failed["run_id"] == "r1"
    assert "run_id" not in elsewhere


def test_text_lines_keep_their_format():
    logger, stream = _capture("text")
    with log_context(run_id="r1"):
        logger.info("hello %d", 1)
    assert TEXT_FORMAT == "%(asctime)s %(levelname)s %(name)s: %(message)s"
    assert stream.getvalue().rstrip().endswith("INFO test.logging.text: hello 1")
