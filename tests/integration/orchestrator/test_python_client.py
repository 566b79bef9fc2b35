"""gold.Client and gold.AsyncClient against the real orchestrator (over HTTP, on PostgreSQL): a run
created from a dict, a YAML file and a RunSpec, followed, read page by page, its dataset out as
JSONL rows, as parquet (read back by `datasets`) and with its card, its student downloaded, and the
API's errors as typed exceptions carrying its message and field."""

from __future__ import annotations

import asyncio
import json
import uuid

import datasets
import pytest
import yaml

from gold import AsyncClient, Client, ConflictError, NotFoundError, ValidationError
from gold.client_errors import AuthenticationError
from services.orchestrator.main import create_app
from shared.db.models import Checkpoint, Iteration, Metric, Run, Sample
from shared.names import RunStatus
from shared.spec import RunSpec
from tests.integration.orchestrator.conftest import TOKEN
from tests.support import served

GENERATED = [  # (kind, text, requested label, kept label, teacher's distribution, energy, fed back)
    ("train", "a warm, funny film", "positive", "positive", {"positive": 0.9, "negative": 0.1}, 0.2, False),
    ("train", "a film I will forget", "positive", "negative", {"positive": 0.3, "negative": 0.7}, 0.8, True),
    ("ood", "the plot never lands", "negative", "negative", {"positive": 0.2, "negative": 0.8}, 1.4, True),
]


@pytest.fixture
def url(orchestrator_settings, session_factory):
    with served(create_app(orchestrator_settings, drive_runs=False)) as base:
        yield base


@pytest.fixture
def client(url):
    with Client(url, TOKEN) as gold:
        yield gold


def finish(session_factory, run_id: uuid.UUID, artifacts) -> uuid.UUID:
    """The run as the driver leaves it after one iteration: generated rows, a metric, a final student
    whose folder is in the artifact store."""
    checkpoint = uuid.uuid4()
    folder = artifacts / "checkpoints" / str(checkpoint)
    folder.mkdir(parents=True)
    (folder / "config.json").write_text("{}")
    (folder / "README.md").write_text("# GOLD student\n")
    with session_factory.begin() as session:
        run = session.get(Run, run_id)
        run.status, run.iteration, run.progress = RunStatus.SUCCEEDED, 1, 1.0
        session.add(Iteration(run_id=run_id, index=1, status="succeeded"))
        session.add(Metric(run_id=run_id, iteration=1, name="eval_accuracy", value=0.75))
        session.add(
            Checkpoint(
                id=checkpoint,
                run_id=run_id,
                iteration=1,
                role="final",
                path=f"checkpoints/{checkpoint}",
                student_model="default",
                student_kind="classifier",
            )
        )
        for position, (kind, text, requested, kept, probs, energy, fed_back) in enumerate(GENERATED):
            session.add(
                Sample(
                    run_id=run_id,
                    iteration=1,
                    kind=kind,
                    position=position,
                    fields={"text": text, "label": kept},
                    label=kept,
                    requested_label=requested,
                    teacher_probs=probs,
                    energy=energy,
                    selected=fed_back,
                    prompt_examples={"seeds": [0, 1], "samples": [], "feedback": [], "attribute": None},
                )
            )
    return checkpoint


def test_a_run_from_create_to_its_dataset_and_student(
    client, spec, session_factory, orchestrator_settings, tmp_path
):
    run = client.create_run(spec, idempotency_key="first")
    assert client.create_run(spec, idempotency_key="first").id == run.id  # the same run, not a second
    checkpoint = finish(session_factory, run.id, orchestrator_settings.artifacts)

    seen: list[str] = []
    summary = client.wait(run.id, on_progress=lambda r: seen.append(r.status), poll_s=0.05, timeout_s=30)
    assert seen == [RunStatus.SUCCEEDED] and summary.run.status == RunStatus.SUCCEEDED
    assert [i.index for i in client.iterations(run.id)] == [1]
    assert [(m.name, m.value) for m in client.metrics(run.id)] == [("eval_accuracy", 0.75)]

    seeds = len(spec["task"]["seed_examples"])
    pages = list(client.samples(run.id, page_size=2))
    assert [len(p.items) for p in pages] == [2] * ((seeds + 3) // 2) + ([1] if (seeds + 3) % 2 else [])
    assert {p.total for p in pages} == {seeds + 3}
    fed_back = [s.fields["text"] for p in client.samples(run.id, selected=True) for s in p.items]
    assert sorted(fed_back) == ["a film I will forget", "the plot never lands"]

    rows = client.dataset_rows(run.id)
    relabelled = next(r for r in rows if r["text"] == "a film I will forget")
    assert relabelled["label"] == "negative" and relabelled["gold_requested_label"] == "positive"
    assert relabelled["gold_teacher_label"] == "negative" and relabelled["gold_teacher_agrees"] is False
    assert relabelled["gold_selected"] is True and relabelled["gold_prompt_seeds"] == [0, 1]

    # parquet: the same rows, read by `datasets` from the file the export wrote, beside its card
    folder = client.export_dataset(run.id, tmp_path / "export")
    loaded = datasets.load_dataset(
        "parquet", data_files=str(folder / "data.parquet"), split="train", cache_dir=str(tmp_path / "cache")
    )
    assert loaded.num_rows == len(rows) == seeds + 3
    assert loaded.to_list() == rows
    assert client.dataset(run.id).to_list() == rows
    card = (folder / "README.md").read_text()
    assert "data_files: data.parquet" in card and "generated by the teacher" in card.lower()
    assert "| train | negative | no | 1 |" in card and str(checkpoint) in card

    model = client.download_model(run.id, tmp_path / "model")
    assert (model / "config.json").is_file() and (model / "README.md").read_text() == "# GOLD student\n"

    client.delete(run.id)
    with pytest.raises(NotFoundError, match="not found") as missing:
        client.get_run(run.id)
    assert missing.value.status_code == 404 and missing.value.error == "not_found"


def test_a_spec_file_or_a_runspec_makes_the_same_run(client, spec, tmp_path):
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump(spec))
    from_file = client.create_run(path, idempotency_key="same")
    assert client.create_run(RunSpec.model_validate(spec), idempotency_key="same").id == from_file.id
    assert client.create_run(str(path), idempotency_key="same").id == from_file.id
    assert [r.id for r in client.list_runs(status=RunStatus.QUEUED)] == [from_file.id]


def test_the_apis_errors_are_typed_with_its_message_and_field(client, url, spec):
    bad = {**spec, "loop": {**spec["loop"], "selection_band": [0.9, 0.1]}}
    with pytest.raises(ValidationError) as invalid:
        client.create_run(bad)
    assert invalid.value.status_code == 422 and invalid.value.field == "loop.selection_band"

    run = client.create_run(spec, idempotency_key="k")
    with pytest.raises(ConflictError, match="Idempotency-Key"):
        client.create_run({**spec, "name": "another"}, idempotency_key="k")
    with pytest.raises(ConflictError, match="no trained student"):
        client.download_model(run.id, "unused")
    with pytest.raises(ValidationError) as bad_format:
        client._send("GET", f"/runs/{run.id}/dataset", params={"format": "csv"})
    assert bad_format.value.field is not None and bad_format.value.field.endswith("format")
    with Client(url, "wrong-token") as stranger, pytest.raises(AuthenticationError):
        stranger.list_runs()


def test_the_async_client_follows_and_pages_the_same(url, spec, session_factory, orchestrator_settings):
    async def scenario() -> tuple[str, int, list[dict]]:
        async with AsyncClient(url, TOKEN) as gold:
            run = await gold.create_run(spec)
            finish(session_factory, run.id, orchestrator_settings.artifacts)
            summary = await gold.wait(run.id, poll_s=0.05, timeout_s=30)
            pages = [page async for page in gold.samples(run.id, page_size=4)]
            return summary.run.status, sum(len(p.items) for p in pages), await gold.dataset_rows(run.id)

    status, count, rows = asyncio.run(scenario())
    assert status == RunStatus.SUCCEEDED and count == len(rows) == len(spec["task"]["seed_examples"]) + 3
    assert json.loads(json.dumps(rows)) == rows
