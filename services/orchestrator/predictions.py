"""Answers from a finished run's student: the inputs are checked against the run's task here, then
the scorer (which holds loaded students, services/scorer/engine.py) decodes them. Reads only."""

from __future__ import annotations

import uuid

from sqlalchemy.orm import Session

from services.orchestrator.exports import best_checkpoint
from services.orchestrator.service import get_run
from shared.auth import Principal
from shared.clients import ScorerClient
from shared.errors import Conflict, InvalidInput
from shared.names import RunStatus
from shared.schemas.prediction import CheckpointPredictRequest, PredictRequest, PredictResponse
from shared.spec import RunSpec


def predict(
    run_id: uuid.UUID,
    request: PredictRequest,
    *,
    session: Session,
    principal: Principal,
    scorer: ScorerClient,
) -> PredictResponse:
    """The student the run ended with (the final student, else its last loop student: the one
    `GET /runs/{id}/model` exports) answers each input."""
    run = get_run(run_id, session=session, principal=principal)
    if run.status != RunStatus.SUCCEEDED:
        raise Conflict(
            f"run {run_id} is {run.status}: predictions use the student a run ends with, "
            "so they are answered once it has succeeded"
        )
    task = RunSpec.model_validate(run.spec).task
    for i, fields in enumerate(request.inputs):
        for name in task.input_fields:
            if name not in fields:
                raise InvalidInput(
                    f"inputs.{i}.{name}", f"every input needs the task's fields {task.input_fields}"
                )
    checkpoint = best_checkpoint(run_id, session=session, principal=principal)  # or a 409
    checkpoint_id = checkpoint.id
    # Decoding may take seconds: give the connection back to the pool before the scorer is asked.
    session.close()
    answer = scorer.predict(CheckpointPredictRequest(checkpoint_id=checkpoint_id, inputs=request.inputs))
    return PredictResponse(
        run_id=run_id,
        output_field=task.output_field,
        **answer.model_dump(),
    )
