"""`POST /runs/{id}/predict` against the real orchestrator, PostgreSQL and a real scorer over HTTP,
with students the trainer trained (tests/integration/conftest.py): the answers are the scorer's for
the run's student, bad input is a 4xx naming the field, and the run rules of the other routes hold."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient
from pydantic import SecretStr

from services.orchestrator.main import create_app
from services.scorer.config import ScorerSettings
from services.scorer.main import create_app as create_scorer
from shared.names import RunStatus
from shared.schemas.prediction import MAX_PREDICT_INPUTS
from tests.integration.conftest import NLI, NLI_TASK, QA_TASK
from tests.integration.orchestrator.conftest import TOKEN, student_run
from tests.support import served

pytestmark = pytest.mark.slow

OTHER_TOKEN = "another-tenant"


@pytest.fixture(scope="module")
def scorer_url(scorer_artifacts) -> Iterator[str]:
    settings = ScorerSettings(artifact_dir=scorer_artifacts["artifacts"], api_keys={"tests": TOKEN})
    with served(create_scorer(settings)) as url:
        yield url


@pytest.fixture
def api(orchestrator_settings, session_factory, scorer_url) -> Iterator[TestClient]:
    settings = orchestrator_settings.model_copy(
        update={
            "scorer_url": scorer_url,
            "service_token": SecretStr(TOKEN),
            "api_keys": {"tests": SecretStr(TOKEN), "other": SecretStr(OTHER_TOKEN)},
        }
    )
    headers = {"Authorization": f"Bearer {TOKEN}"}
    with TestClient(create_app(settings, drive_runs=False), headers=headers) as client:
        yield client


def _scorer_answer(scorer_url: str, checkpoint: str, inputs: list[dict]) -> dict:
    import httpx

    response = httpx.post(
        f"{scorer_url}/v1/predict",
        json={"checkpoint_id": checkpoint, "inputs": inputs},
        headers={"Authorization": f"Bearer {TOKEN}"},
        timeout=600,
    )
    assert response.status_code == 200, response.text
    return response.json()


def test_a_classifier_run_answers_labels_and_probabilities(
    api, session_factory, scorer_artifacts, scorer_url
):
    cid = scorer_artifacts["classifier"]
    run_id = student_run(api, session_factory, NLI_TASK, checkpoint=cid)
    inputs = [fields for fields, _ in NLI]
    response = api.post(f"/runs/{run_id}/predict", json={"inputs": inputs})
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["run_id"] == run_id and body["checkpoint_id"] == cid
    assert body["student_kind"] == "classifier" and body["output_field"] == "label"
    assert body["predictions"] == _scorer_answer(scorer_url, cid, inputs)["predictions"]
    for prediction in body["predictions"]:
        probabilities = prediction["probabilities"]
        assert set(probabilities) == {"entailment", "contradiction"}
        assert abs(sum(probabilities.values()) - 1) < 1e-5
        assert prediction["output"] == max(probabilities, key=probabilities.__getitem__)


def test_a_causal_run_answers_generated_text(api, session_factory, scorer_artifacts, scorer_url):
    cid = scorer_artifacts["causal"]
    run_id = student_run(api, session_factory, QA_TASK, checkpoint=cid)
    inputs = [{"context": "The museum opens at ten.", "question": "When does it open?"}]
    response = api.post(f"/runs/{run_id}/predict", json={"inputs": inputs})
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["student_kind"] == "causal" and body["output_field"] == "answer"
    assert body["predictions"] == _scorer_answer(scorer_url, cid, inputs)["predictions"]
    assert body["predictions"][0]["probabilities"] is None


def test_bad_input_is_a_422_naming_the_field(api, session_factory, scorer_artifacts):
    run_id = student_run(api, session_factory, NLI_TASK, checkpoint=scorer_artifacts["classifier"])
    missing = api.post(f"/runs/{run_id}/predict", json={"inputs": [NLI[0][0], {"premise": "alone"}]})
    assert missing.status_code == 422
    assert missing.json()["detail"][0]["loc"] == ["inputs", "1", "hypothesis"]
    assert "hypothesis" in missing.json()["message"]
    too_many = api.post(f"/runs/{run_id}/predict", json={"inputs": [NLI[0][0]] * (MAX_PREDICT_INPUTS + 1)})
    assert too_many.status_code == 422 and too_many.json()["detail"][0]["loc"] == ["inputs"]
    for body in ({"inputs": []}, {"inputs": [NLI[0][0]], "temperature": 1}, {"inputs": [{"premise": 3}]}):
        assert api.post(f"/runs/{run_id}/predict", json=body).status_code == 422, body


def test_only_a_finished_run_with_a_student_answers(api, session_factory, scorer_artifacts):
    inputs = {"inputs": [NLI[0][0]]}
    running = student_run(api, session_factory, NLI_TASK, status=RunStatus.RUNNING)
    response = api.post(f"/runs/{running}/predict", json=inputs)
    assert response.status_code == 409 and "is running" in response.json()["message"]
    failed = student_run(api, session_factory, NLI_TASK, status=RunStatus.FAILED)
    assert api.post(f"/runs/{failed}/predict", json=inputs).status_code == 409
    no_student = student_run(api, session_factory, NLI_TASK)
    response = api.post(f"/runs/{no_student}/predict", json=inputs)
    assert response.status_code == 409 and "no trained student" in response.json()["message"]


def test_auth_and_tenants(api, session_factory, scorer_artifacts):
    run_id = student_run(api, session_factory, NLI_TASK, checkpoint=scorer_artifacts["classifier"])
    body = {"inputs": [NLI[0][0]]}
    assert api.post(f"/runs/{run_id}/predict", json=body, headers={"Authorization": ""}).status_code == 401
    other = api.post(f"/runs/{run_id}/predict", json=body, headers={"Authorization": f"Bearer {OTHER_TOKEN}"})
    missing = api.post(f"/runs/{uuid.uuid4()}/predict", json=body)
    assert other.status_code == missing.status_code == 404
    assert other.json()["message"] == f"run {run_id} not found"


def test_the_python_client_predicts_over_http(
    api, orchestrator_settings, session_factory, scorer_artifacts, scorer_url
):
    from gold import Client, ValidationError

    cid = scorer_artifacts["classifier"]
    run_id = student_run(api, session_factory, NLI_TASK, checkpoint=cid)
    settings = orchestrator_settings.model_copy(
        update={"scorer_url": scorer_url, "service_token": SecretStr(TOKEN)}
    )
    with served(create_app(settings, drive_runs=False)) as url, Client(url, TOKEN) as gold:
        inputs = [fields for fields, _ in NLI]
        answer = gold.predict(run_id, inputs)
        assert str(answer.checkpoint_id) == cid and answer.output_field == "label"
        expected = _scorer_answer(scorer_url, cid, inputs)["predictions"]
        assert [p.model_dump() for p in answer.predictions] == expected
        with pytest.raises(ValidationError) as caught:
            gold.predict(run_id, [inputs[0], {"premise": "a cat sleeps"}])
        assert caught.value.field == "inputs.1.hypothesis"
