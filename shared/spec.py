"""The run spec: what a user submits to `POST /runs` (YAML or JSON)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    ValidationInfo,
    field_validator,
    model_validator,
)

from shared.schemas.base import InputModel

FieldName = Annotated[str, StringConstraints(pattern=r"^[A-Za-z_][A-Za-z0-9_]{0,63}$")]
ShortText = Annotated[str, StringConstraints(min_length=1, max_length=200)]


class TaskSpec(InputModel):
    type: Literal["classification", "seq2seq"] = Field(
        description="classification: the output is one of `labels`; seq2seq: the output is free text."
    )
    description: str = Field(
        min_length=1,
        max_length=2000,
        description="What the task is, in words; the teacher's prompts open with it.",
    )
    input_fields: list[FieldName] = Field(
        min_length=1, max_length=4, description="Names of the input columns (e.g. `[premise, hypothesis]`)."
    )
    output_field: FieldName = Field(description="Name of the output column (the label or the answer).")
    labels: list[ShortText] | None = Field(
        default=None,
        max_length=32,
        validate_default=True,
        description="The label set: at least two, distinct, for classification; none for seq2seq.",
    )
    seed_source: SeedSourceSpec | None = Field(
        default=None,
        description="Where the seed examples come from instead of `seed_examples`: a JSONL file or a "
        "Hugging Face dataset, read as `evaluation` is. Loaded when the run is created; the run's "
        "stored spec keeps the rows it read as `seed_examples`. null: `seed_examples` is given.",
    )
    seed_examples: list[dict[str, Annotated[str, StringConstraints(max_length=4000)]]] = Field(
        default_factory=list,
        max_length=16,
        validate_default=True,
        description="Hand-written examples, each a mapping of every input field and the output field "
        "to its text (a label from `labels` for classification); the few-shot examples of every prompt. "
        "At least two, unless `seed_source` names where to read them.",
    )

    # Field validators (not one model validator) so a 422 names the exact field, e.g. task.labels.
    @field_validator("output_field")
    @classmethod
    def _distinct(cls, value: str, info: ValidationInfo) -> str:
        if value in info.data.get("input_fields", []):
            raise ValueError("output_field must differ from every input field")
        return value

    @field_validator("labels")
    @classmethod
    def _labels(cls, value: list[str] | None, info: ValidationInfo) -> list[str] | None:
        if info.data.get("type") == "classification":
            if not value or len(value) < 2:
                raise ValueError("a classification task needs at least two labels")
            if len(set(value)) != len(value):
                raise ValueError("duplicate label")
        elif value:
            raise ValueError("only classification tasks take labels")
        return value

    @field_validator("seed_examples")
    @classmethod
    def _seeds(cls, value: list[dict[str, str]], info: ValidationInfo) -> list[dict[str, str]]:
        if "input_fields" not in info.data or "output_field" not in info.data:
            return value  # the field errors above are reported instead
        if not value and ("seed_source" not in info.data or info.data["seed_source"] is not None):
            return value  # read from seed_source when the run is created (or its own error is reported)
        if len(value) < 2:
            raise ValueError("give at least two seed examples, or a seed_source to read them from")
        fields = [*info.data["input_fields"], info.data["output_field"]]
        labels = info.data.get("labels")
        for i, example in enumerate(value):
            missing = [f for f in fields if not example.get(f, "").strip()]
            if missing:
                raise ValueError(f"example {i} is missing field(s) {missing}")
            extra = sorted(set(example) - set(fields))
            if extra:
                raise ValueError(f"example {i} has unknown field(s) {extra}")
            label = example[info.data["output_field"]]
            if labels and label not in labels:
                raise ValueError(f"example {i} has label {label!r}, which is not one of {labels}")
        return value


# Guided decoding of the field format: on, off, or "auto" (on where the engine supports it and it
# was measured to help the task's type; services/generator/service.py STRUCTURED_HELPS).
StructuredChoice = Literal["auto"] | bool


class TeacherSpec(InputModel):
    model: str = Field(
        default="default",
        max_length=200,
        description="The teacher, by a name the generator serves (GOLD_GENERATOR_MODELS, "
        "GOLD_GENERATOR_TEACHERS); default: the generator's default teacher.",
    )
    temperature: float = Field(default=0.8, ge=0.0, le=2.0, description="Sampling temperature of generation.")
    top_p: float = Field(
        default=0.95, gt=0.0, le=1.0, description="Nucleus sampling: the probability mass kept."
    )
    top_k: int = Field(
        default=50, ge=-1, le=1000, description="Sample among this many likeliest tokens; -1: all."
    )
    max_tokens: int = Field(default=96, ge=8, le=1024, description="Longest generated sample, in tokens.")
    seed: int = Field(
        default=0, ge=0, le=2**31 - 1, description="Seed the run's generation requests derive theirs from."
    )
    structured: StructuredChoice = Field(
        default="auto",
        description="Guided decoding of generated samples: every completion is constrained to the loop's "
        "field format (a grammar on llama.cpp, a regex on vLLM) instead of parsed from free text. "
        "auto: on where the serving engine supports it and it was measured to help the task type "
        "(docs/generator-api.md, Structured outputs).",
    )
    # Below the bound the teacher's judgement is no better than its label prior (gemma-3-270m
    # answers "entailment" to every SNLI and RTE pair: kappa 0).
    min_kappa: float | None = Field(
        default=0.1,
        ge=-1.0,
        le=1.0,
        description="The teacher's labels replace the requested ones (verification's relabel and drop, "
        "the feedback check) only while they agree with them at a Cohen's kappa of at least this "
        "(verification: over the iteration's batch; feedback: over every OOD sample judged in the run); "
        "below it the requested labels stay and no feedback goes into the next prompt. "
        "null: always use the teacher's labels.",
    )

    @property
    def served_model(self) -> str | None:
        """The model every generator request of the run names: None ("default") is whatever
        teacher the generator serves by default."""
        return None if self.model == "default" else self.model


# Student model names that mean an encoder-decoder (student.kind auto -> seq2seq): "tiny-t5", t5-*,
# flan-t5-*, bart-*; any other name of a seq2seq task is a causal LM.
ENCODER_DECODER_FAMILIES = ("t5", "bart")
# A classifier's final student at this rate rather than the loop's 2e-4, retrained on the same
# pools (`gold retrain`, docs/experiments/2026-12-01-final-student-learning-rate.md): SST-2 +1.5
# [+0.3, +2.6] on 9 pools, TREC +1.3 on 4; 5e-5 gave SST-2 +2.9 but TREC -5.
CLASSIFIER_FINAL_LEARNING_RATE = 1.0e-4


class StudentSpec(InputModel):
    model: str = Field(
        default="default",
        max_length=200,
        description="The student model, by a name in GOLD_ALLOWED_STUDENT_MODELS; default: the kind's "
        "default student (classifier: all-MiniLM-L6-v2; causal: SmolLM2-135M-Instruct; seq2seq: a tiny T5).",
    )
    kind: Literal["auto", "classifier", "seq2seq", "causal"] = Field(
        default="auto",
        description="auto: a classifier for classification; for seq2seq tasks a causal LM, or an "
        "encoder-decoder when `model` names one (T5, BART).",
    )
    epochs: int = Field(default=3, ge=1, le=100, description="Epochs of each loop iteration's training.")
    # The final student is fresh and sees the pool once per epoch, while the loop's student kept
    # training across iterations: it needs more epochs.
    final_epochs: int = Field(
        default=10,
        ge=1,
        le=200,
        description="Epochs of the final student, stopped early on held-out generated data.",
    )
    learning_rate: float = Field(
        default=2.0e-4, gt=0.0, le=1.0, description="Learning rate of the loop's students."
    )
    # The loop's students keep learning_rate: they must learn in a few short epochs (at 5e-5 the
    # first SST-2 loop student is at chance).
    final_learning_rate: float | None = Field(
        default=None,
        gt=0.0,
        le=1.0,
        description="Learning rate of the fresh final (and reference) student. null: 1e-4 for a "
        "classifier (never above learning_rate), learning_rate for the other kinds.",
    )
    head_learning_rate: float | None = Field(
        default=None,
        gt=0.0,
        le=1.0,
        description="Classifier: the learning rate of the classification head, which starts untrained, "
        "while learning_rate moves the pretrained encoder. null: the same rate for both.",
    )
    batch_size: int = Field(default=16, ge=1, le=512, description="Training batch size (per process).")
    max_length: int = Field(
        default=128, ge=8, le=1024, description="Longest input, in tokens (longer ones are cut)."
    )
    # A fixed 64 cut NL4OPT's 131-280-token formulations to their first quarter.
    max_target_length: int | None = Field(
        default=None,
        ge=2,
        le=2048,
        description="Seq2seq and causal students: the answer's length in tokens (end token included); "
        "longer answers are cut in training and decoding stops there. null: twice the longest answer "
        "each training job trains on (at least 8 tokens more).",
    )
    loss: Literal["ce", "sce"] = Field(
        default="ce", description="ce: cross-entropy; sce: symmetric cross-entropy."
    )
    sce_alpha: float = Field(default=1.0, ge=0.0, description="sce: weight of the cross-entropy term.")
    sce_beta: float = Field(default=1.0, ge=0.0, description="sce: weight of the reverse cross-entropy term.")
    continue_training: bool = Field(
        default=True,
        description="Continue fine-tuning one student through the loop (the paper's code); false: "
        "a fresh student each iteration.",
    )
    # The paper's code fine-tunes its one student on each new batch only; retraining on the whole
    # pool every iteration costs the sum of the pool sizes, which at 16 iterations of 64 is 8 times
    # the final student's data.
    loop_window: int | None = Field(
        default=None,
        ge=1,
        le=1000,
        description="The loop's student trains each iteration on the samples of the newest N "
        "iterations only (an OOD batch joins the iteration after its own), continuing from the "
        "previous iteration's student (its held-out score is still on every held-out sample so far); "
        "the final student trains on all. null: everything generated so far.",
    )
    seed: int = Field(
        default=44, ge=0, le=2**31 - 1, description="Seed of the student's initialisation and data order."
    )
    # The default was measured on SST-2 (docs/experiments/2026-11-30-default-recipe.md).
    distill_weight: float = Field(
        default=0.5,
        ge=0.0,
        le=1.0,
        description="Classifier: soft-label distillation, loss = (1 - w) * hard loss + w * T^2 * "
        "KL(teacher_T || student_T), with the teacher's label distribution from verification (on the "
        "samples it has one for: none while teacher.min_kappa distrusts the teacher). 0: the paper's "
        "hard labels only.",
    )
    distill_temperature: float = Field(
        default=2.0, gt=0.0, le=20.0, description="The temperature T of soft-label distillation."
    )
    # The requested labels are balanced, but the teacher's relabelling skews the pool (SST-2 63%
    # positive, TREC 33% NUM). Off: measured +9 points on TREC, -3 on SST-2, one repeat each
    # (docs/experiments/2026-12-01-tried-not-adopted.md).
    balance_classes: bool = Field(
        default=False,
        description="Classifier: weight each label's examples so that every label carries the same "
        "total weight.",
    )
    lora_rank: int | None = Field(
        default=None,
        ge=1,
        le=256,
        description="LoRA adapters of this rank (alpha 2 x rank) on every linear layer instead of full "
        "fine-tuning, merged into the weights when a checkpoint is saved. null: full fine-tuning.",
    )


class VerificationSpec(InputModel):
    """The teacher re-scores each generated classification sample's label by likelihood."""

    # auto's choice was measured: docs/experiments/2026-11-30-default-recipe.md.
    policy: Literal["auto", "off", "keep", "relabel", "drop"] = Field(
        default="auto",
        description="off: no check. keep: record agreement only. relabel: train on the teacher's label. "
        "drop: leave out samples whose requested label the teacher disagrees with. auto: relabel for "
        "classification, off for seq2seq. Whatever the policy, a teacher at chance on the task "
        "(teacher.min_kappa) changes no label.",
    )
    min_confidence: float = Field(
        default=0.0,
        ge=0.0,
        le=1.0,
        description="Also leave out samples whose (final) label has a teacher probability below this.",
    )


class LoopSpec(InputModel):
    iterations: int = Field(
        default=3,
        ge=0,
        le=1000,
        description="Generate-train-score iterations. 0: no student is trained; the run measures only "
        "the baselines `evaluation` asks for (e.g. a candidate teacher's few-shot score).",
    )
    samples_per_iteration: int = Field(
        default=48, ge=1, le=10000, description="Training samples asked of the teacher each iteration."
    )
    ood_samples_per_iteration: int = Field(
        default=16,
        ge=0,
        le=10000,
        description="Out-of-distribution samples asked of the teacher each iteration, scored by the "
        "student's energy; some are fed back into the next prompts. Vanilla (feedback off) spends them "
        "on training samples instead, so both use the same generation budget.",
    )
    feedback: bool = Field(
        default=True,
        description="Feed OOD samples back into the next iteration's prompts (GOLD); false: vanilla "
        "generation.",
    )
    feedback_per_iteration: int = Field(
        default=4, ge=0, le=64, description="OOD samples selected for feedback each iteration."
    )
    feedback_per_prompt: int = Field(
        default=2,
        ge=1,
        le=32,
        description="How many of them each training prompt shows (a new draw per prompt).",
    )
    stratify_selection: bool = Field(
        default=False,
        description="Classification: share the feedback count across labels instead of taking the band "
        "as is.",
    )
    # A hard negative right before "Label: negative" makes the teacher write more like it (a base
    # model copies the example nearest the new one). Off: with stratify_selection, SST-2's loop
    # students ended 1.9 points higher but its final students 1.0 lower (3 repeats;
    # docs/experiments/2026-12-01-measured-again.md).
    feedback_same_label: bool = Field(
        default=False,
        description="Classification: each training prompt shows feedback of the label it asks for, "
        "instead of whichever label the draw gives.",
    )
    selection_band: tuple[float, float] = Field(
        default=(0.5, 0.8),
        description="Feedback is drawn from the OOD samples whose energy lies between these two "
        "quantiles (low, high) of the batch's energies.",
    )
    energy_temperature: float = Field(
        default=1.0,
        gt=0.0,
        le=100.0,
        description="Temperature of the student's energy score (-T logsumexp(logits / T)).",
    )
    holdout_fraction: float = Field(
        default=0.15,
        ge=0.0,
        lt=1.0,
        description="Share of generated training data held out to measure the student on generated data.",
    )
    final_student: bool = Field(
        default=True,
        description="The paper's last step: train a fresh student on the whole generated pool.",
    )
    max_seconds: int | None = Field(
        default=None,
        ge=1,
        le=7 * 24 * 3600,
        description="Wall-time budget: no new iteration starts once the run has run this long; the final "
        "student is still trained on what was generated. null: the iteration count decides.",
    )
    patience: int | None = Field(
        default=2,
        ge=1,
        le=1000,
        description="The paper's stopping rule: no new iteration starts once the loop student's score on "
        "held-out generated data (never the real evaluation data) has not improved for this many "
        "iterations. null: off.",
    )
    feedback_check: Literal["relabel", "drop"] = Field(
        default="relabel",
        description="Classification: the teacher checks feedback before it goes into a prompt; its "
        "likelihood relabels a selected sample (relabel) or leaves one it disagrees with out (drop).",
    )
    ood_attributes: int = Field(
        default=24,
        ge=0,
        le=256,
        description="OOD prompts are steered by attributes the teacher lists once per run (subjects, "
        "settings, kinds of writer), one named in each prompt. 0: the instruction alone.",
    )
    feedback_min_confidence: float = Field(
        default=0.0,
        ge=0.0,
        le=1.0,
        description="A selected sample whose label has a teacher probability below this is not fed back.",
    )
    near_duplicate_similarity: float | None = Field(
        default=0.95,
        gt=0.0,
        le=1.0,
        description="A generated sample whose input has this cosine similarity or more to one already in "
        "the pool (seeds and every earlier sample), in MiniLM sentence-embedding space, is rejected as a "
        "near duplicate. null: exact duplicates only.",
    )

    @property
    def uses_feedback(self) -> bool:
        return self.feedback and self.ood_samples_per_iteration > 0

    @property
    def generation_budget(self) -> int:
        """Samples asked of the teacher over the whole loop, the same with feedback on or off."""
        return self.iterations * (self.samples_per_iteration + self.ood_samples_per_iteration)

    @property
    def train_samples_per_iteration(self) -> int:
        """Vanilla spends the OOD budget on plain training samples: same generation budget."""
        if self.uses_feedback:
            return self.samples_per_iteration
        return self.samples_per_iteration + self.ood_samples_per_iteration

    @field_validator("feedback_per_iteration")
    @classmethod
    def _feedback_source(cls, value: int, info: ValidationInfo) -> int:
        if info.data.get("feedback") and value > 0 and info.data.get("ood_samples_per_iteration") == 0:
            raise ValueError("feedback needs OOD samples: set ood_samples_per_iteration > 0")
        return value

    @field_validator("selection_band")
    @classmethod
    def _band(cls, value: tuple[float, float]) -> tuple[float, float]:
        low, high = value
        if not (0.0 <= low < high <= 1.0):
            raise ValueError("need 0 <= low < high <= 1 (quantiles of the OOD energies)")
        return value


# The metrics of each task type (shared/task_metrics.py computes them); the first is the default headline.
TASK_METRICS = {
    "classification": ("accuracy", "macro_f1", "kappa"),
    "seq2seq": ("f1", "exact_match", "rouge_l"),
}
MetricName = Literal["accuracy", "macro_f1", "kappa", "exact_match", "f1", "rouge_l"]


# A Hugging Face dataset id, "owner/name": never a path (a name cannot start with / . or ~, nor
# climb out with ..). `datasets` reads a folder of that relative name in the working directory
# before asking the hub, which is how a machine without the hub (and the tests) provides one.
HubDatasetName = Annotated[
    str, StringConstraints(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,95}/[A-Za-z0-9][A-Za-z0-9_.-]{0,95}$")
]
# A split name, with the `datasets` slicing syntax allowed (train[:1000]).
SplitName = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9_][A-Za-z0-9_.:%+\[\]-]{0,99}$")]


class FileSource(BaseModel):
    """Real rows in a local JSONL file (one JSON object a line)."""

    model_config = ConfigDict(frozen=True)
    kind: Literal["file"] = "file"
    field: str  # the spec field that names it, for error messages: evaluation.path
    path: str

    def __str__(self) -> str:
        return f"{self.field} {self.path}"


class HubSource(BaseModel):
    """Real rows in one split of a Hugging Face dataset, loaded with `datasets`."""

    model_config = ConfigDict(frozen=True)
    kind: Literal["hub"] = "hub"
    field: str  # evaluation.dataset or evaluation.reference_split
    dataset: str
    config: str | None = None
    split: str

    def __str__(self) -> str:
        config = f", config {self.config}" if self.config else ""
        return f"{self.field}: Hugging Face dataset {self.dataset} (split {self.split}{config})"


# Where a spec's real rows come from: the one shape shared/evaluation_data.py loads.
DataSource = Annotated[FileSource | HubSource, Field(discriminator="kind")]


def check_one_source(path: str | None, dataset: str | None) -> None:
    """A spec's rows come from a JSONL file (`path`) or a Hugging Face dataset, exactly one."""
    if path is not None and dataset is not None:
        raise ValueError("give path (a JSONL file) or dataset (a Hugging Face dataset), not both")
    if path is None and dataset is None:
        raise ValueError(
            "the data is missing: give path (a JSONL file) or dataset (a Hugging Face dataset name, "
            "with split)"
        )


class RealRowsSpec(InputModel):
    """Real labelled rows: a local JSONL file (`path`) or one split of a Hugging Face dataset
    (`dataset` and `split`, `config` where it has several), exactly one of them, with the columns
    mapped to the task's fields. The validators are field validators, so that a 422 names the field
    (evaluation.dataset, task.seed_source.split)."""

    field_prefix: ClassVar[str]  # where the spec holds it, for the source's error messages
    split_example: ClassVar[str]  # the split such rows usually come from, for the split's error

    path: str | None = Field(
        default=None,
        min_length=1,
        max_length=1000,
        description="A labelled JSONL file (one JSON object a line) under one of GOLD_DATA_ROOTS "
        "(relative paths resolve against the first). Give it or `dataset`, not both.",
    )
    dataset: HubDatasetName | None = Field(
        default=None,
        validate_default=True,
        description="A Hugging Face dataset (owner/name), loaded with the `datasets` library; needs "
        "`split`. Give it or `path`, not both.",
    )
    config: str | None = Field(
        default=None,
        min_length=1,
        max_length=200,
        description="With `dataset`: its configuration, where it has several. null: the default one.",
    )
    split: SplitName | None = Field(
        default=None,
        validate_default=True,
        description="With `dataset`: the split read (`train[:1000]` slicing allowed).",
    )
    input_map: dict[FieldName, str] = Field(
        default_factory=dict,
        description="Task input field -> column of the data, for columns named otherwise (unnamed "
        "fields are read from the column of the same name).",
    )
    label_field: str = Field(
        default="label_text",
        max_length=64,
        description="The column holding the label or answer, or a dotted path into a row "
        "(answers.text), whose value may be a list of acceptable answers; a dataset's class-label "
        "column reads as the class names.",
    )

    @field_validator("dataset")
    @classmethod
    def _one_source(cls, value: str | None, info: ValidationInfo) -> str | None:
        if "path" in info.data:  # else path's own error is reported
            check_one_source(info.data["path"], value)
        return value

    @field_validator("config", "split")
    @classmethod
    def _dataset_parts(cls, value: str | None, info: ValidationInfo) -> str | None:
        if value is not None and info.data.get("path") is not None:
            raise ValueError(f"{info.field_name} applies to a dataset, not to path")
        if info.field_name == "split" and value is None and info.data.get("dataset") is not None:
            raise ValueError(f"name the dataset's split to read ({cls.split_example})")
        return value

    @property
    def source(self) -> DataSource:
        """Where the rows come from."""
        if self.dataset is not None:
            assert self.split is not None  # the validators require it
            return HubSource(
                field=f"{self.field_prefix}.dataset",
                dataset=self.dataset,
                config=self.config,
                split=self.split,
            )
        assert self.path is not None
        return FileSource(field=f"{self.field_prefix}.path", path=self.path)


class SeedSourceSpec(RealRowsSpec):
    """The seed examples read from real rows (`task.seed_source`) rather than written in the spec."""

    field_prefix: ClassVar[str] = "task.seed_source"
    split_example: ClassVar[str] = "e.g. train"

    limit: int = Field(
        default=8,
        ge=2,
        le=16,
        description="How many seed examples to read: the first usable rows, as many of each label "
        "as the others for classification (rows in file or split order).",
    )


TaskSpec.model_rebuild()  # its seed_source field names SeedSourceSpec, defined here beside the sources


class EvaluationSpec(RealRowsSpec):
    """The labelled real data the students (and the teacher, few-shot) are measured on."""

    field_prefix: ClassVar[str] = "evaluation"
    split_example: ClassVar[str] = "the one measured on, e.g. validation or test"

    metric: MetricName | None = Field(
        default=None,
        description="The headline metric of tables, plots and `gold eval`, one of the task type's "
        "(classification: accuracy, macro_f1, kappa; seq2seq: f1, exact_match, rouge_l). null: the "
        "first of them.",
    )
    limit: int | None = Field(
        default=None,
        ge=1,
        le=100000,
        description="Measure on the first this many usable rows (in order). null: all.",
    )
    teacher_baseline: bool = Field(
        default=True,
        description="Also measure the teacher answering the same data few-shot (the label by likelihood "
        "for classification, its greedy answer for seq2seq).",
    )
    reference_path: str | None = Field(
        default=None,
        min_length=1,
        max_length=1000,
        description="The supervised reference: a labelled JSONL file of real training examples (same "
        "columns as `path`); a fresh student trained on as many of its rows as the run's generation "
        "budget (or reference_examples) is measured beside the distilled one. null: none.",
    )
    reference_split: SplitName | None = Field(
        default=None,
        description="With `dataset`: the split the supervised reference trains on (e.g. train), "
        "instead of reference_path.",
    )
    reference_examples: int | None = Field(
        default=None,
        ge=2,
        le=100000,
        description="Rows the supervised reference trains on. null: the run's generation budget.",
    )
    student_baseline: bool = Field(
        default=False,
        description="Causal students: also measure the student before distillation, answering the same "
        "data few-shot after the seed examples (what distillation added). `gold eval --modes student` "
        "sets it.",
    )

    @field_validator("reference_split")
    @classmethod
    def _reference_split(cls, value: str | None, info: ValidationInfo) -> str | None:
        if value is None:
            return value
        if info.data.get("reference_path") is not None:
            raise ValueError("give reference_path or reference_split, not both")
        if info.data.get("dataset") is None:
            raise ValueError("reference_split is a split of `dataset`: with path, use reference_path")
        return value

    @property
    def reference_source(self) -> DataSource | None:
        """Where the supervised reference's real training rows come from (None: no reference)."""
        if self.reference_path is not None:
            return FileSource(field="evaluation.reference_path", path=self.reference_path)
        if self.reference_split is not None and self.dataset is not None:
            return HubSource(
                field="evaluation.reference_split",
                dataset=self.dataset,
                config=self.config,
                split=self.reference_split,
            )
        return None


class RunSpec(InputModel):
    name: str = Field(
        min_length=1, max_length=200, description="The run's name, shown in listings and reports."
    )
    task: TaskSpec = Field(description="What the student learns to do.")
    teacher: TeacherSpec = Field(default=TeacherSpec(), description="The teacher and how it samples.")
    # before the student: its soft labels depend on it
    verification: VerificationSpec = Field(
        default=VerificationSpec(),
        validate_default=True,
        description="The teacher's check of the labels it generated.",
    )
    student: StudentSpec = Field(
        default=StudentSpec(), validate_default=True, description="The student model and its training."
    )
    loop: LoopSpec = Field(default=LoopSpec(), description="The generation loop: budget, feedback, stopping.")
    evaluation: EvaluationSpec | None = Field(
        default=None, description="Real labelled data to measure on, and the baselines. null: none."
    )

    @field_validator("verification")
    @classmethod
    def _verification_needs_labels(cls, value: VerificationSpec, info: ValidationInfo) -> VerificationSpec:
        task = info.data.get("task")
        if value.policy == "auto":  # resolved here, so the stored spec says what ran
            classification = task is None or task.type == "classification"
            value = value.model_copy(update={"policy": "relabel" if classification else "off"})
        if value.policy != "off" and task is not None and task.type != "classification":
            raise ValueError("policy: teacher verification applies to classification tasks only")
        return value

    @field_validator("student")
    @classmethod
    def _soft_labels_need_verification(cls, value: StudentSpec, info: ValidationInfo) -> StudentSpec:
        """Soft labels are the teacher's distributions from verification: without verification,
        distillation asked for is an error, and the default one is off (so the spec says so)."""
        verification = info.data.get("verification")
        if verification is None or verification.policy != "off" or value.distill_weight == 0:
            return value
        if "distill_weight" not in value.model_fields_set:
            return value.model_copy(update={"distill_weight": 0.0})
        raise ValueError(
            "distill_weight: soft-label distillation needs the teacher's label distribution; "
            "set verification.policy to keep, relabel or drop (classification), or distill_weight: 0"
        )

    @field_validator("evaluation")
    @classmethod
    def _evaluation_fields(cls, value: EvaluationSpec | None, info: ValidationInfo) -> EvaluationSpec | None:
        task = info.data.get("task")
        if value and task:
            unknown = sorted(set(value.input_map) - set(task.input_fields))
            if unknown:
                raise ValueError(f"input_map names {unknown}, which are not task input_fields")
            allowed = TASK_METRICS[task.type]
            if value.metric is not None and value.metric not in allowed:
                raise ValueError(
                    f"metric {value.metric!r} does not apply to {task.type} tasks: use one of {list(allowed)}"
                )
        return value

    @model_validator(mode="after")
    def _baselines_only_run_measures_something(self) -> RunSpec:
        if self.loop.iterations > 0:
            return self
        e = self.evaluation
        if e is None or not (e.teacher_baseline or e.student_baseline or e.reference_source):
            raise ValueError(
                "loop.iterations: 0 trains no student and measures only baselines; add an evaluation "
                "section with teacher_baseline, student_baseline or reference_path (reference_split)"
            )
        if e.reference_source and e.reference_examples is None:
            raise ValueError(
                "evaluation.reference_examples: with loop.iterations 0 there is no generation budget "
                "to match; say how many real examples the supervised reference trains on"
            )
        return self

    @model_validator(mode="after")
    def _loop_window_continues_one_student(self) -> RunSpec:
        if self.student.loop_window is not None and not self.student.continue_training:
            raise ValueError(
                "student.loop_window: a fresh student each iteration (student.continue_training false) "
                "would know only the newest samples; set continue_training true or loop_window null"
            )
        return self

    @model_validator(mode="after")
    def _student_baseline_needs_a_causal_student(self) -> RunSpec:
        if self.evaluation is not None and self.evaluation.student_baseline and self.student_kind != "causal":
            raise ValueError(
                "evaluation.student_baseline: only a causal student answers few-shot before training "
                f"(this spec's student is a {self.student_kind})"
            )
        return self

    @property
    def headline_metric(self) -> str:
        """The metric a run is judged by, as named in TASK_METRICS (the stored names add eval_)."""
        chosen = self.evaluation.metric if self.evaluation else None
        return chosen or TASK_METRICS[self.task.type][0]

    @property
    def fresh_student_learning_rate(self) -> float:
        """The rate a fresh (final or reference) student trains at."""
        s = self.student
        if s.final_learning_rate is not None:
            return s.final_learning_rate
        if self.student_kind == "classifier":
            return min(s.learning_rate, CLASSIFIER_FINAL_LEARNING_RATE)
        return s.learning_rate

    @property
    def student_kind(self) -> Literal["classifier", "seq2seq", "causal"]:
        if self.student.kind != "auto":
            return self.student.kind
        if self.task.type == "classification":
            return "classifier"
        name = self.student.model.lower()
        return "seq2seq" if any(family in name for family in ENCODER_DECODER_FAMILIES) else "causal"


def load_spec_file(path: str | Path) -> dict[str, Any]:
    """Read a YAML or JSON spec file into a dict (validation happens at the API)."""
    with open(path, encoding="utf-8") as handle:
        data = yaml.safe_load(handle)
    if not isinstance(data, dict):
        raise ValueError(f"{path}: a run spec must be a mapping")
    return data


def stored_spec(data: dict[str, Any]) -> RunSpec:
    """A run's spec as the orchestrator returns it, read by a client: fields this version does not
    know (a newer server's) are ignored rather than refused, so a CLI following a run survives
    an upgrade of the services under it. Specs a user sends stay strict (unknown field: 422)."""
    return RunSpec.model_validate(data, extra="ignore")
