"""The teachers a generator serves: the allow-listed models of `generator_model` (the default) and
`generator_teachers`, each its own engine, loaded, watched and reloaded on its own. A request
names one by its allow-list name or the model id it reports; a request naming none gets the
default teacher, so a generator with one teacher behaves as it always has."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import math
import os
import signal
import time
from collections.abc import Mapping
from contextlib import suppress
from dataclasses import dataclass

from services.generator.config import OPENAI_UPSTREAM, GeneratorSettings
from services.generator.engines.choice import engine_for, remote
from services.generator.engines.factory import build_engine
from services.generator.engines.protocol import TextEngine
from services.generator.model_store import (
    ResolvedModel,
    packaged_model_id,
    packaged_prompt_format,
    resolve_model,
)
from services.generator.start_check import check_generation
from shared.errors import NotFound, NotReady

logger = logging.getLogger(__name__)


class UnknownModel(NotFound):
    """A request named a model this generator does not serve: a 404 naming the `model` field."""

    def __init__(self, model: str, served: list[str]):
        message = f"model {model!r} is not served here; GET /v1/models lists {served}"
        super().__init__(message, detail=[{"loc": ["model"], "msg": message}])


def model_id(settings: GeneratorSettings, name: str) -> str:
    """The id a teacher reports (for a remote one, its model's name on the remote server)."""
    source = settings.generator_models.get(name, "")
    reported = settings.generator_model_ids.get(name) or packaged_model_id(source) or name
    legacy_remote = settings.generator_engine == "openai" and name == settings.generator_model
    return (settings.generator_openai_model or reported) if legacy_remote else reported


def resolve_teacher(settings: GeneratorSettings, name: str, gguf: bool = False) -> ResolvedModel:
    """The allow-listed model `name`; a remote one's `path` is the server's base URL (no files)."""
    source = settings.generator_models.get(name, "")
    written = settings.generator_prompt_formats.get(name) or packaged_prompt_format(source) or "raw"
    if remote(settings, name):
        if source.startswith(OPENAI_UPSTREAM):
            url = source.removeprefix(OPENAI_UPSTREAM)
        else:
            url = settings.generator_openai_base_url or ""
        return ResolvedModel(name, model_id(settings, name), url, None, prompt_format=written)
    model = resolve_model(
        name, settings.generator_models, settings.generator_model_ids, settings.models_dir, gguf=gguf
    )
    return dataclasses.replace(model, prompt_format=written)


def _build(settings: GeneratorSettings, name: str) -> TextEngine:
    kind = engine_for(settings, name)
    model = resolve_teacher(settings, name, gguf=kind == "llamacpp")
    return build_engine(settings, model, kind)


@dataclass
class Teacher:
    name: str  # its allow-list name
    names: tuple[str, ...]  # what requests may call it
    engine: TextEngine | None = None  # set while loaded and serving
    starting: TextEngine | None = None
    error: str | None = None  # why its first load failed (for good: a model that cannot be served)
    restarts: int = 0
    # While an engine that died is reloaded: the engine, why it died, when the next try is due
    # (time.monotonic()) and how the tries so far failed.
    dead: TextEngine | None = None
    death: str = ""
    reload_at: float = 0.0
    reload_failures: int = 0
    reload_error: str | None = None

    def serving(self) -> TextEngine:
        """The engine, or a 503 saying why there is none (loading, reloading, failed)."""
        engine = self.engine
        if engine is not None and engine.ready():
            return engine
        if self.error:
            raise NotReady(f"the engine failed to start: {self.error}")
        if self.dead is None:
            state, retry_s = "still loading", 10
        else:
            state, retry_s = f"reloading after it died ({self.death})", 10
            if self.reload_error:
                wait_s = max(0, math.ceil(self.reload_at - time.monotonic()))
                state += (
                    f"; {self.reload_failures} reloads failed, the last with {self.reload_error}; "
                    f"the next try is in {wait_s} s"
                )
                retry_s = max(retry_s, wait_s)
        raise NotReady(
            f"the engine is {state}; retry when /readyz answers 200",
            headers={"Retry-After": str(retry_s)},
        )

    def state(self) -> str:
        if self.engine is not None and self.engine.ready():
            return "ready"
        if self.error:
            return f"failed: {self.error}"
        return "reloading" if self.dead is not None else "loading"


async def _checked(engine: TextEngine) -> None:
    """The start check (start_check.py); an engine that fails it is closed, not served."""
    try:
        await check_generation(engine)
    except Exception:  # a failed check, or the probe itself failing
        await engine.close()
        raise


class Teachers:
    """Every teacher of the generator, the default first. `engines` replaces the configured ones
    (tests of the serving logic): its keys are then the teachers' names."""

    def __init__(self, settings: GeneratorSettings, engines: Mapping[str, TextEngine] | None = None):
        self.settings = settings
        self._given = dict(engines or {})
        if self._given:
            self.all = [
                Teacher(name, (engine.info.model.model_id, name)) for name, engine in self._given.items()
            ]
        else:
            names = [settings.generator_model, *settings.generator_teachers]
            self.all = [Teacher(name, (model_id(settings, name), name)) for name in names]
        # A name two teachers could claim (the same model id twice) belongs to the first.
        self._by_name: dict[str, Teacher] = {}
        for teacher in self.all:
            for name in teacher.names:
                self._by_name.setdefault(name, teacher)

    @property
    def default(self) -> Teacher:
        return self.all[0]

    def names(self) -> list[str]:
        """What requests may name, the default teacher's names first (GET /v1/models)."""
        return list(self._by_name)

    def engine(self, model: str | None) -> TextEngine:
        """The serving engine of the teacher a request names (none: the default)."""
        if model is None:
            return self.default.serving()
        teacher = self._by_name.get(model)
        if teacher is None:
            raise UnknownModel(model, self.names())
        return teacher.serving()

    # -- lifecycle -------------------------------------------------------------------------------
    async def start(self, *, exit_on_failure: bool) -> None:
        """Load the teachers one after another, the default first (each in a worker thread, the
        event loop serving meanwhile: a teacher not yet loaded answers 503). Not at once: engines
        loading in parallel threads raced on transformers' lazy imports (`cannot import name
        'AutoTokenizer'`), and two engines loading together on a CPU host fight for its cores."""
        for teacher in self.all:
            await self._start(teacher, self._given.get(teacher.name), exit_on_failure)
            if exit_on_failure and teacher.error is not None:
                return

    async def _load(self, teacher: Teacher, engine: TextEngine | None) -> None:
        started = time.perf_counter()
        built = engine is None
        if engine is None:
            engine = await asyncio.to_thread(_build, self.settings, teacher.name)
        teacher.starting = engine
        await engine.start()
        if built and self._packaged(teacher.name):
            await _checked(engine)
        teacher.engine = engine
        logger.info(
            "%s engine of %r ready with %s in %.1f s",
            engine.info.engine,
            teacher.name,
            engine.info.model.model_id,
            time.perf_counter() - started,
        )

    async def _start(self, teacher: Teacher, engine: TextEngine | None, exit_on_failure: bool) -> None:
        try:
            await self._load(teacher, engine)
        except Exception as exc:
            teacher.error = f"{type(exc).__name__}: {exc}"
            logger.exception("the engine of %r failed to start", teacher.name)
            if exit_on_failure:  # a service that can never serve should stop, not answer 503 forever
                os.kill(os.getpid(), signal.SIGTERM)

    def _packaged(self, name: str) -> bool:
        """A teacher of the packaged-model registry (model_store): checked by a first generation
        when it first loads. A user's own folder or server is served as given."""
        return self.settings.generator_models.get(name, "").startswith("package:")

    async def watch(self) -> None:
        """Reload an engine that dies while serving (vLLM's engine process killed by the OOM killer,
        or dead of a step that timed out on an overloaded host), until it loads again: a failed
        reload is retried after a wait that doubles, up to generator_reload_backoff_max_s. An
        engine that served once can serve again (the host was busy, memory was short), so the
        generator never gives up on it; meanwhile its requests answer 503 with the reason and a
        Retry-After, which the orchestrator waits out (GOLD_DEPENDENCY_PATIENCE_S)."""
        while True:
            await asyncio.sleep(self.settings.generator_watch_s)
            for teacher in self.all:
                engine = teacher.engine
                if engine is not None and not engine.ready():
                    await self._bury(teacher, engine)
                if teacher.dead is not None and time.monotonic() >= teacher.reload_at:
                    await self._reload(teacher)

    async def _bury(self, teacher: Teacher, engine: TextEngine) -> None:
        """Log why `teacher`'s engine died and close what is left of it (its processes too)."""
        death_cause = getattr(engine, "death_cause", None)
        teacher.death = death_cause() if death_cause is not None else "it stopped answering ready"
        teacher.engine, teacher.dead, teacher.reload_at = None, engine, time.monotonic()
        teacher.restarts += 1
        logger.error(
            "the %s engine of %r died: %s; reloading it (restart %d)",
            engine.info.engine,
            teacher.name,
            teacher.death,
            teacher.restarts,
        )
        try:
            await engine.close()
        except Exception as exc:  # it is dead already: reload it whatever closing says
            logger.warning("closing the dead engine of %r failed: %s", teacher.name, exc)

    async def _reload(self, teacher: Teacher) -> None:
        engine = teacher.dead
        try:
            await self._load(teacher, engine)
        except Exception as exc:
            teacher.reload_failures += 1
            teacher.reload_error = f"{type(exc).__name__}: {exc}"
            wait_s = min(
                self.settings.generator_watch_s * 2**teacher.reload_failures,
                self.settings.generator_reload_backoff_max_s,
            )
            teacher.reload_at = time.monotonic() + wait_s
            logger.exception(
                "reloading the engine of %r failed (%d times); trying again in %.0f s",
                teacher.name,
                teacher.reload_failures,
                wait_s,
            )
            if engine is not None:
                with suppress(Exception):  # what a half-loaded engine started
                    await engine.close()
            return
        teacher.dead, teacher.reload_failures, teacher.reload_error = None, 0, None

    async def close(self) -> None:
        for teacher in self.all:
            running = teacher.engine or teacher.starting
            if running is not None:
                await running.close()
