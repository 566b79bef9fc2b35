"""The trainer worker's Redis client outlasts a Redis restart (a real embedded Redis, shut down and
started again on the same socket): a command sent while it is down is answered once it is back."""

from __future__ import annotations

import threading
import time

import pytest
from redis import Redis
from redis.exceptions import ConnectionError as RedisConnectionError

from services.trainer.worker import patient_redis
from shared.local_servers import start_redis
from tests.support import restart_local_redis


def test_a_command_sent_while_redis_restarts_is_answered_once_it_is_back(tmp_path):
    server = start_redis(tmp_path / "redis")
    try:
        patient, plain = patient_redis(server.url), Redis.from_url(server.url)
        patient.set("key", "value")
        restart = threading.Thread(target=restart_local_redis, args=(server.url, 10.0))
        restart.start()
        time.sleep(1.0)  # down now, for 10 s
        with pytest.raises(RedisConnectionError):
            plain.get("key")  # what ended the worker before
        assert patient.get("key") == b"value"
        restart.join()
    finally:
        server.stop()
