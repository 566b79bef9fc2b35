"""Generation, classification and answers: prompts in, parsed samples, label distributions or
the teacher's few-shot answers out.

One request becomes one batch of engine work: every prompt (with n completions each) is handed to
the engine at once, and the engine batches them (vLLM: continuous batching).
"""

from __future__ import annotations

import logging
import math
import random
import secrets
from collections.abc import Sequence

from services.generator.config import GeneratorSettings
from services.generator.engines.protocol import Sampling, TextEngine, derive_seed, engine_errors
from services.generator.limits import Quota
from services.generator.metrics import Metrics
from services.generator.parsing import Candidate, Limits, Rejection, deduplicate, parse_completion
from services.generator.prompts import (
    ANSWER_REQUEST,
    ANSWER_STOP,
    ATTRIBUTES_OPENING,
    LIST_REQUEST,
    NEXT_EXAMPLE_REQUEST,
    STOP,
    answer_prefix,
    answer_prompt,
    assign_labels,
    attributes_prompt,
    field_format,
    in_chat,
    parse_attributes,
    plan_generation,
)
from shared.errors import InvalidInput
from shared.schemas.generation import (
    AnswerRequest,
    AnswerResponse,
    AttributesRequest,
    AttributesResponse,
    ClassifyRequest,
    ClassifyResponse,
    ClassPrediction,
    GeneratedSample,
    GenerateRequest,
    GenerateResponse,
    GenerationSettingsUsed,
    ParseStats,
    PromptExamples,
    Rejected,
    Usage,
)
from shared.spec import TaskSpec

logger = logging.getLogger(__name__)

# Classification inputs scored per engine call: bounds memory, keeps the batch large.
CLASSIFY_CHUNK = 256


def _check_examples(task: TaskSpec, examples: Sequence[dict[str, str]], where: str, *, output: bool) -> None:
    needed = [*task.input_fields, task.output_field] if output else list(task.input_fields)
    for i, example in enumerate(examples):
        missing = [f for f in needed if not str(example.get(f, "")).strip()]
        if missing:
            raise InvalidInput(f"{where}.{i}", f"missing field(s) {missing}; every entry needs {needed}")
        label = example.get(task.output_field)
        if output and task.type == "classification" and label not in (task.labels or []):
            raise InvalidInput(f"{where}.{i}", f"label {label!r} is not one of {task.labels}")


def _requested_labels(request: GenerateRequest, rng: random.Random) -> list[str | None]:
    task = request.task
    if request.labels is None:
        return assign_labels(task, request.n, rng)
    if task.type != "classification":
        raise InvalidInput("labels", "labels can only be requested for classification tasks")
    if len(request.labels) != request.n:
        raise InvalidInput(
            "labels", f"give one label per sample: {len(request.labels)} labels for n={request.n}"
        )
    unknown = sorted({label for label in request.labels if label not in (task.labels or [])})
    if unknown:
        raise InvalidInput("labels", f"{unknown} not in the task's labels {task.labels}")
    return list(request.labels)


def written_for(engine: TextEngine, text: str, opening: str, request: str) -> str:
    """A generation prompt as the teacher is prompted: as it is (raw), or in its chat template."""
    if engine.info.model.prompt_format == "chat":
        return in_chat(text, opening, request, engine.chat_prompt)
    return text


def answer_prompt_for(
    engine: TextEngine, task: TaskSpec, prefix: str, count: int, inputs: dict[str, str]
) -> str:
    """A classify or answer prompt as the teacher is prompted: the few-shot prefix, then the new
    input under the next example's header, in its chat template where the teacher speaks chat."""
    text = answer_prompt(task, prefix, count, inputs)
    return written_for(engine, text, text[len(prefix) :], ANSWER_REQUEST)


def settings_used(engine: TextEngine, sampling: Sampling, seed: int | None) -> GenerationSettingsUsed:
    info = engine.info
    return GenerationSettingsUsed(
        model=info.model.model_id,
        revision=info.model.revision,
        engine=info.engine,
        engine_version=info.engine_version,
        prompt_format=info.model.prompt_format,
        seed=seed,
        temperature=sampling.temperature,
        top_p=sampling.top_p,
        top_k=sampling.top_k,
        max_tokens=sampling.max_tokens,
    )


async def generate(
    engine: TextEngine,
    request: GenerateRequest,
    *,
    settings: GeneratorSettings,
    metrics: Metrics,
    quota: Quota,
) -> GenerateResponse:
    return await quota.spend(
        lambda: _generate(engine, request, settings, metrics),
        request.n,
        request.sampling.max_tokens,
        tokens_field="sampling.max_tokens",
    )


# Task types whose samples guided decoding of the field format makes better (structured="auto").
# None so far (bench/structured_outputs.py, docs/generator-api.md): gemma-3-270m on llama.cpp keeps
# the format on its own (SST-2 samples unchanged), and on NL4OPT the grammar only makes its
# mis-nested JSON valid.
STRUCTURED_HELPS: frozenset[str] = frozenset()


def use_structured(engine: TextEngine, request: GenerateRequest) -> bool:
    """Whether the request's completions are decoded under the field format."""
    if request.structured == "auto":
        return engine.info.supports_structured and request.task.type in STRUCTURED_HELPS
    if request.structured and not engine.info.supports_structured:
        raise InvalidInput(
            "structured",
            f"structured output (guided decoding) is not available with the {engine.info.engine} engine; "
            "send structured=false (free-text parsing) or auto",
        )
    return request.structured


async def _generate(
    engine: TextEngine, request: GenerateRequest, settings: GeneratorSettings, metrics: Metrics
) -> GenerateResponse:
    task = request.task
    structured = use_structured(engine, request)
    examples = list(request.examples) if request.examples is not None else list(task.seed_examples)
    if not examples:
        raise InvalidInput("examples", "give at least one in-context example (or leave it out for the seeds)")
    _check_examples(task, examples, "examples", output=True)
    _check_examples(task, request.feedback, "feedback", output=True)

    seed = request.sampling.seed if request.sampling.seed is not None else secrets.randbelow(2**31)
    rng = random.Random(seed)
    labels = _requested_labels(request, rng)
    plans = plan_generation(
        task,
        examples,
        request.feedback,
        labels,
        mode=request.mode,
        samples_per_prompt=settings.generator_samples_per_prompt,
        max_examples=settings.generator_max_examples_per_prompt,
        rng=rng,
        attributes=request.attributes,
        feedback_per_prompt=request.feedback_per_prompt,
        feedback_same_label=request.feedback_same_label,
    )
    base = Sampling(
        temperature=request.sampling.temperature,
        top_p=request.sampling.top_p,
        top_k=request.sampling.top_k,
        max_tokens=request.sampling.max_tokens,
        stop=STOP,
    )
    # Each prompt gets its own seed: vLLM seeds per request, and equal seeds repeat samples.
    per_prompt = [
        Sampling(
            **{
                **base.__dict__,
                "n": plan.n,
                "seed": derive_seed(seed, request.mode, i),
                "field_format": field_format(task, plan, settings.generator_min_chars, examples)
                if structured
                else None,
            }
        )
        for i, plan in enumerate(plans)
    ]
    if settings.generator_log_prompts:
        for plan in plans:
            logger.info("prompt (label %s, n %d):\n%s", plan.label, plan.n, plan.text)
    texts = [written_for(engine, p.text, p.opening, NEXT_EXAMPLE_REQUEST) for p in plans]
    with engine_errors("sampling"):
        results = await engine.generate(texts, per_prompt)

    limits = Limits(
        settings.generator_min_chars,
        settings.generator_max_chars,
        settings.generator_near_duplicate_threshold,
    )
    candidates: list[tuple[Candidate, str]] = []
    rejections: list[Rejected] = []
    completions = 0
    for plan, result in zip(plans, results, strict=True):
        for completion in result.completions:
            completions += 1
            parsed = parse_completion(task, plan, completion.text, completion.finish_reason, limits)
            if isinstance(parsed, Rejection):
                rejections.append(Rejected(reason=parsed.reason, text=parsed.text))
            else:
                candidates.append((parsed, completion.text))
            if settings.generator_log_prompts:
                logger.info("completion: %r", completion.text)
    raw_of = {id(c): text for c, text in candidates}
    kept, dropped = deduplicate(
        task,
        [c for c, _ in candidates],
        [*examples, *request.feedback],
        request.exclude_hashes,
        settings.generator_near_duplicate_threshold,
    )
    rejections.extend(Rejected(reason=reason, text=raw_of[id(c)]) for reason, c in dropped)

    counts: dict[str, int] = {}
    for rejection in rejections:
        counts[rejection.reason] = counts.get(rejection.reason, 0) + 1
    samples = [
        GeneratedSample(
            fields=c.fields,
            label=c.label,
            text_hash=c.hash,
            prompt=PromptExamples(
                examples=list(c.prompt.examples),
                feedback=list(c.prompt.feedback),
                attribute=c.prompt.attribute,
            ),
        )
        for c in kept
    ]
    usage = Usage(
        prompt_tokens=sum(r.prompt_tokens for r in results),
        completion_tokens=sum(c.tokens for r in results for c in r.completions),
    )
    metrics.record_generation(len(samples), counts, usage.prompt_tokens, usage.completion_tokens)
    logger.info(
        "generate mode=%s n=%d prompts=%d accepted=%d rejected=%s",
        request.mode,
        request.n,
        len(plans),
        len(samples),
        counts,
    )
    return GenerateResponse(
        samples=samples,
        stats=ParseStats(
            requested=request.n, completions=completions, accepted=len(samples), rejected=counts
        ),
        rejections=rejections,
        usage=usage,
        settings=settings_used(engine, base, seed).model_copy(update={"structured": structured}),
    )


# Completions of the attribute list prompt per request: each lists up to ~15 items.
ATTRIBUTE_COMPLETIONS = 8


async def attributes(
    engine: TextEngine,
    request: AttributesRequest,
    *,
    settings: GeneratorSettings,
    metrics: Metrics,
    quota: Quota,
) -> AttributesResponse:
    return await quota.spend(
        lambda: _attributes(engine, request, metrics),
        ATTRIBUTE_COMPLETIONS,
        request.sampling.max_tokens,
        tokens_field="sampling.max_tokens",
    )


async def _attributes(engine: TextEngine, request: AttributesRequest, metrics: Metrics) -> AttributesResponse:
    """Several continuations of a numbered list of subjects for the task's data; their items,
    de-duplicated, shuffled by the seed, at most n."""
    seed = request.sampling.seed if request.sampling.seed is not None else secrets.randbelow(2**31)
    sampling = Sampling(
        temperature=request.sampling.temperature,
        top_p=request.sampling.top_p,
        top_k=request.sampling.top_k,
        max_tokens=request.sampling.max_tokens,
        stop=("\n\n",),
        n=ATTRIBUTE_COMPLETIONS,
        seed=seed,
    )
    with engine_errors("sampling"):
        prompt = written_for(engine, attributes_prompt(request.task), ATTRIBUTES_OPENING, LIST_REQUEST)
        (result,) = await engine.generate([prompt], [sampling])
    seen: dict[str, str] = {}
    for completion in result.completions:
        for item in parse_attributes(completion.text, cut=completion.finish_reason == "length"):
            seen.setdefault(item.lower(), item)
    listed = list(seen.values())
    random.Random(seed).shuffle(listed)
    usage = Usage(
        prompt_tokens=result.prompt_tokens, completion_tokens=sum(c.tokens for c in result.completions)
    )
    metrics.record_tokens(usage.prompt_tokens, usage.completion_tokens)
    return AttributesResponse(
        attributes=listed[: request.n], usage=usage, settings=settings_used(engine, sampling, seed)
    )


def _softmax(scores: Sequence[float]) -> list[float]:
    top = max(scores)
    weights = [math.exp(s - top) for s in scores]
    total = sum(weights)
    return [w / total for w in weights]


# Inputs with no content: what the prompt alone makes the model say (contextual calibration).
CONTENT_FREE = ("N/A", "[MASK]", "...")


def _normalise(values: Sequence[float]) -> list[float]:
    total = sum(values)
    return [v / total for v in values]


async def _content_free_prior(
    engine: TextEngine, task: TaskSpec, prefix: str, count: int, continuations: list[str]
) -> list[float]:
    """The label distribution the few-shot prompt gives an empty input: a small base model leans
    hard toward some labels whatever the input (measured: 84% "negative" on SST-2), so dividing by
    this prior (Zhao et al. 2021, contextual calibration) recovers most of its accuracy."""
    empty = [{field: text for field in task.input_fields} for text in CONTENT_FREE]
    rows = await engine.score_continuations(
        [answer_prompt_for(engine, task, prefix, count, x) for x in empty], continuations
    )
    return _normalise([sum(column) / len(rows) for column in zip(*(_softmax(r) for r in rows), strict=True)])


def _answer_examples(
    request: ClassifyRequest | AnswerRequest, settings: GeneratorSettings
) -> list[dict[str, str]]:
    """The in-context examples of a classify or answer request, after checking it."""
    if len(request.inputs) > settings.generator_max_classify_inputs:
        raise InvalidInput(
            "inputs",
            f"at most {settings.generator_max_classify_inputs} inputs per request: "
            "split them over several requests",
        )
    task = request.task
    examples = list(request.examples) if request.examples is not None else list(task.seed_examples)
    if not examples:
        raise InvalidInput("examples", "give at least one in-context example (or leave it out for the seeds)")
    _check_examples(task, examples, "examples", output=True)
    _check_examples(task, request.inputs, "inputs", output=False)
    return examples


async def classify(
    engine: TextEngine,
    request: ClassifyRequest,
    *,
    settings: GeneratorSettings,
    metrics: Metrics,
    quota: Quota,
) -> ClassifyResponse:
    task = request.task
    # One scored token per input and label: cheap next to generation, but still counted.
    held = await quota.reserve(len(request.inputs) * len(task.labels or [1]), size_field="inputs")
    if task.type != "classification" or not task.labels:
        raise InvalidInput("task.type", "classify answers classification tasks (with labels) only")
    examples = _answer_examples(request, settings)
    prefix = answer_prefix(task, examples)
    continuations = [f" {label}" for label in task.labels]
    predictions: list[ClassPrediction] = []
    with engine_errors("sampling"):
        prior = await _content_free_prior(engine, task, prefix, len(examples), continuations)
        for start in range(0, len(request.inputs), CLASSIFY_CHUNK):
            chunk = request.inputs[start : start + CLASSIFY_CHUNK]
            prompts = [answer_prompt_for(engine, task, prefix, len(examples), x) for x in chunk]
            for row in await engine.score_continuations(prompts, continuations):
                probabilities = _softmax(row)
                if request.calibrate:
                    probabilities = _normalise([p / q for p, q in zip(probabilities, prior, strict=True)])
                best = max(range(len(probabilities)), key=probabilities.__getitem__)
                predictions.append(
                    ClassPrediction(
                        label=task.labels[best],
                        probabilities={label: p for label, p in zip(task.labels, probabilities, strict=True)},
                    )
                )
    metrics.record_classification(len(predictions))
    held.used = held.tokens
    return ClassifyResponse(
        predictions=predictions,
        model=engine.info.model.model_id,
        engine=engine.info.engine,
        parameters=engine.info.parameters,
    )


async def answer(
    engine: TextEngine,
    request: AnswerRequest,
    *,
    settings: GeneratorSettings,
    metrics: Metrics,
    quota: Quota,
) -> AnswerResponse:
    # One greedy answer per input: n is 1, the inputs are the size of the request.
    return await quota.spend(
        lambda: _answer(engine, request, settings, metrics),
        1,
        request.max_tokens,
        prompts=len(request.inputs),
        size_field="inputs",
    )


async def _answer(
    engine: TextEngine, request: AnswerRequest, settings: GeneratorSettings, metrics: Metrics
) -> AnswerResponse:
    """Greedy few-shot answers, one line each; the engine caches the shared prefix."""
    task = request.task
    examples = _answer_examples(request, settings)
    prefix = answer_prefix(task, examples)
    sampling = Sampling(temperature=0.0, top_p=1.0, top_k=-1, max_tokens=request.max_tokens, stop=ANSWER_STOP)
    prompts = [answer_prompt_for(engine, task, prefix, len(examples), x) for x in request.inputs]
    with engine_errors("max_tokens"):
        results = await engine.generate(prompts, [sampling] * len(prompts))
    usage = Usage(
        prompt_tokens=sum(r.prompt_tokens for r in results),
        completion_tokens=sum(c.tokens for r in results for c in r.completions),
    )
    metrics.record_answers(len(prompts), usage.prompt_tokens, usage.completion_tokens)
    return AnswerResponse(
        answers=[r.completions[0].text.strip() for r in results],
        finish_reasons=[r.completions[0].finish_reason for r in results],
        usage=usage,
        model=engine.info.model.model_id,
        engine=engine.info.engine,
        parameters=engine.info.parameters,
    )
