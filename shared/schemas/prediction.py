"""Contracts of predictions with a trained student: the orchestrator's public
`POST /runs/{id}/predict` and the scorer's `POST /v1/predict`, which it forwards to."""

from __future__ import annotations

import uuid
from typing import Annotated

from pydantic import Field, StringConstraints

from shared.schemas.base import InputModel, OutputModel

# Inputs per request: a CPU student answers this many in seconds (a classifier) to a minute
# (a causal LM decoding); more belongs in a batch job, not a request.
MAX_PREDICT_INPUTS = 256

# One input: the task's input fields by name (other keys are ignored, so dataset rows can be sent).
PredictInput = dict[str, Annotated[str, StringConstraints(max_length=8000)]]


class PredictRequest(InputModel):
    inputs: list[PredictInput] = Field(min_length=1, max_length=MAX_PREDICT_INPUTS)


class CheckpointPredictRequest(PredictRequest):
    checkpoint_id: uuid.UUID


class Prediction(OutputModel):
    # The answer: the label for a classifier student, the generated text for seq2seq and causal.
    output: str
    # Classifier students: the probability of every label (softmax of its logits), summing to 1.
    probabilities: dict[str, float] | None = None


class CheckpointPredictResponse(OutputModel):
    checkpoint_id: uuid.UUID
    student_kind: str
    predictions: list[Prediction]  # one per input, in request order


class PredictResponse(CheckpointPredictResponse):
    run_id: uuid.UUID
    # The task's output field the answers fill (e.g. "label", "answer").
    output_field: str
