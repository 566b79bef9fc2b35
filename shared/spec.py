"""The run spec: what a user submits to `POST /runs` (YAML or JSON)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal

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
    type: Literal["classification", "seq2seq"]
    description: str = Field(min_length=1, max_length=2000)
    input_fields: list[FieldName] = Field(min_length=1, max_length=4)
    output_field: FieldName
    labels: list[ShortText] | None = Field(default=None, max_length=32, validate_default=True)
    seed_examples: list[dict[str, Annotated[str, StringConstraints(max_length=4000)]]] = Field(
        min_length=2, max_length=16
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


class TeacherSpec(InputModel):
    model: str = Field(default="default", max_length=200)
    temperature: float = Field(default=0.8, ge=0.0, le=2.0)
    top_p: float = Field(default=0.95, gt=0.0, le=1.0)
    top_k: int = Field(default=50, ge=-1, le=1000)
    max_tokens: int = Field(default=96, ge=8, le=1024)
    seed: int = Field(default=0, ge=0, le=2**31 - 1)
    # The teacher's labels replace the requested ones (verification's relabel and drop, the
    # feedback check) only while they agree with the labels it was asked to write better than
    # chance: Cohen's kappa at least this (verification: over the iteration's batch; feedback: over
    # every OOD sample judged in the run). Below it, its judgement is no better than its label
    # prior (gemma-3-270m answers "entailment" to every SNLI and RTE pair: kappa 0): the requested
    # labels stay and no feedback goes into the next prompt. None = always use its labels.
    min_kappa: float | None = Field(default=0.1, ge=-1.0, le=1.0)

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
    model: str = Field(default="default", max_length=200)
    # auto: a classifier for classification; for seq2seq tasks a causal LM (the default student,
    # SmolLM2-135M-Instruct), or an encoder-decoder when `model` names one (T5, BART).
    kind: Literal["auto", "classifier", "seq2seq", "causal"] = "auto"
    epochs: int = Field(default=3, ge=1, le=100)
    # The final student is fresh and sees the pool once per epoch, while the loop's student kept
    # training across iterations: give it more epochs, stopped early on held-out generated data.
    final_epochs: int = Field(default=10, ge=1, le=200)
    learning_rate: float = Field(default=2.0e-4, gt=0.0, le=1.0)
    # The fresh final (and reference) student's rate. None: CLASSIFIER_FINAL_LEARNING_RATE for a
    # classifier (never above learning_rate), learning_rate for the other kinds. The loop's
    # students keep learning_rate: they must learn in a few short epochs (at 5e-5 the first SST-2
    # loop student is at chance).
    final_learning_rate: float | None = Field(default=None, gt=0.0, le=1.0)
    # Classifier: the learning rate of the classification head, which starts untrained, while
    # `learning_rate` moves the pretrained encoder (None: the same rate for both).
    head_learning_rate: float | None = Field(default=None, gt=0.0, le=1.0)
    batch_size: int = Field(default=16, ge=1, le=512)
    max_length: int = Field(default=128, ge=8, le=1024)
    # Seq2seq and causal students: the answer's length in tokens (the end token included). Longer
    # answers are cut in training and decoding stops there. None: fitted to each training job's
    # data, twice the longest answer it trains on (at least 8 tokens more), so no answer is cut and
    # real answers longer than the generated ones are not either (a fixed 64 cut NL4OPT's
    # 131-280-token formulations to their first quarter).
    max_target_length: int | None = Field(default=None, ge=2, le=2048)
    loss: Literal["ce", "sce"] = "ce"
    sce_alpha: float = Field(default=1.0, ge=0.0)
    sce_beta: float = Field(default=1.0, ge=0.0)
    # Continue fine-tuning one student through the loop (the paper's code) or start fresh each time.
    continue_training: bool = True
    seed: int = Field(default=44, ge=0, le=2**31 - 1)
    # Soft-label distillation (classifier): loss = (1 - w) * hard loss + w * T^2 * KL(teacher_T || student_T)
    # with the teacher's label distribution from verification (on samples it has one for: none
    # while teacher.min_kappa distrusts the teacher). 0 = the paper's hard labels only. The default
    # was measured on SST-2 (docs/experiments/2026-11-30-default-recipe.md).
    distill_weight: float = Field(default=0.5, ge=0.0, le=1.0)
    distill_temperature: float = Field(default=2.0, gt=0.0, le=20.0)
    # Classifier: weight each label's examples so that every label carries the same total weight.
    # The requested labels are balanced, but the teacher's relabelling skews the pool (SST-2 63%
    # positive, TREC 33% NUM). Off: measured +9 points on TREC, -3 on SST-2
    # (docs/experiments/2026-12-01-tried-not-adopted.md), one repeat each.
    balance_classes: bool = False
    # LoRA (peft) instead of full fine-tuning: adapters of this rank on every linear layer (alpha
    # = 2 x rank), merged into the weights when a checkpoint is saved, so the checkpoint is a
    # plain model folder as before. None = full fine-tuning.
    lora_rank: int | None = Field(default=None, ge=1, le=256)


class VerificationSpec(InputModel):
    """The teacher re-scores each generated classification sample's label by likelihood."""

    # off: no check. keep: record agreement only. relabel: train on the teacher's label.
    # drop: leave out samples whose requested label the teacher disagrees with. auto: relabel for
    # classification, off for seq2seq (the default, measured:
    # docs/experiments/2026-11-30-default-recipe.md). Whatever the policy, a teacher at chance on the
    # task (teacher.min_kappa) changes no label.
    policy: Literal["auto", "off", "keep", "relabel", "drop"] = "auto"
    # Also leave out samples whose (final) label has a teacher probability below this.
    min_confidence: float = Field(default=0.0, ge=0.0, le=1.0)


class LoopSpec(InputModel):
    # 0: no student is trained; the run measures only the baselines `evaluation` asks for (the
    # teacher's few-shot score of a candidate teacher, say: `gold eval --modes teacher`).
    iterations: int = Field(default=3, ge=0, le=1000)
    samples_per_iteration: int = Field(default=48, ge=1, le=10000)
    ood_samples_per_iteration: int = Field(default=16, ge=0, le=10000)
    feedback: bool = True
    feedback_per_iteration: int = Field(default=4, ge=0, le=64)
    # How many of them each training prompt shows (a new draw per prompt).
    feedback_per_prompt: int = Field(default=2, ge=1, le=32)
    # Share the feedback count across labels (classification) instead of taking the band as is.
    stratify_selection: bool = False
    # Each training prompt shows feedback of the label it asks for (classification): a hard
    # negative right before "Label: negative", so the teacher writes more like it, instead of
    # whichever label the draw gives (a base model copies the example nearest the new one).
    # Off: with stratify_selection, SST-2's loop students ended 1.9 points higher but its final
    # students 1.0 lower (3 repeats; docs/experiments/2026-12-01-measured-again.md).
    feedback_same_label: bool = False
    selection_band: tuple[float, float] = (0.5, 0.8)
    energy_temperature: float = Field(default=1.0, gt=0.0, le=100.0)
    # Share of generated training data held out to measure the student on generated data.
    holdout_fraction: float = Field(default=0.15, ge=0.0, lt=1.0)
    # The paper's last step: a fresh student trained on the whole generated pool.
    final_student: bool = True
    # Wall-time budget: no new iteration starts once the run has been running this long; the
    # final student is still trained on what was generated. None = the iteration count decides.
    max_seconds: int | None = Field(default=None, ge=1, le=7 * 24 * 3600)
    # The paper's stopping rule: no new iteration starts once the loop student's score on
    # held-out GENERATED data (never the real evaluation data) has not improved for this many
    # iterations; the final student is then trained on what was generated. None = off.
    patience: int | None = Field(default=2, ge=1, le=1000)
    # Feedback is checked by the teacher before it goes into a prompt (classification): its
    # calibrated likelihood relabels a band sample (relabel) or leaves a disagreeing one out
    # (drop); either way a sample whose label has a teacher probability below
    # feedback_min_confidence is not fed back.
    feedback_check: Literal["relabel", "drop"] = "relabel"
    # OOD prompts are steered by attributes the teacher lists once per run (subjects, settings,
    # kinds of writer): each prompt of the OOD batch names one. 0 = the instruction alone.
    ood_attributes: int = Field(default=24, ge=0, le=256)
    feedback_min_confidence: float = Field(default=0.0, ge=0.0, le=1.0)
    # A generated sample whose input text has this cosine similarity or more to one already in
    # the pool (seeds and every earlier sample), in the MiniLM sentence-embedding space, is
    # rejected as a near duplicate. None = exact duplicates only.
    near_duplicate_similarity: float | None = Field(default=0.95, gt=0.0, le=1.0)

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


class EvaluationSpec(InputModel):
    # The real rows: a local JSONL file (`path`) or a Hugging Face dataset (`dataset` and `split`,
    # `config` where the dataset has several), exactly one of them.
    path: str | None = Field(default=None, min_length=1, max_length=1000)
    dataset: HubDatasetName | None = Field(default=None, validate_default=True)
    config: str | None = Field(default=None, min_length=1, max_length=200)
    split: SplitName | None = Field(default=None, validate_default=True)
    # The headline metric of tables, plots and `gold eval` (default: the task type's first in
    # TASK_METRICS: accuracy, or token F1 for seq2seq).
    metric: MetricName | None = None
    input_map: dict[FieldName, str] = Field(default_factory=dict)
    # A column or a dotted path; a dataset's class-label column reads as the class names.
    label_field: str = Field(default="label_text", max_length=64)
    limit: int | None = Field(default=None, ge=1, le=100000)
    # Also measure the teacher answering the same data few-shot (the label by likelihood for
    # classification, its greedy answer for seq2seq).
    teacher_baseline: bool = True
    # The supervised reference: a labelled JSONL file of REAL training examples (same columns as
    # `path`), or with `dataset` another split of it (reference_split: train). A fresh student
    # trained on as many of its rows as the run's generation budget (or `reference_examples`) is
    # measured on the evaluation data beside the distilled one.
    reference_path: str | None = Field(default=None, min_length=1, max_length=1000)
    reference_split: SplitName | None = None
    reference_examples: int | None = Field(default=None, ge=2, le=100000)
    # Also measure the student BEFORE distillation answering the same data few-shot after the seed
    # examples (causal students: what distillation added). `gold eval --modes student` sets it.
    student_baseline: bool = False

    # Field validators, so that the 422 names the field (evaluation.dataset, evaluation.split).
    @field_validator("dataset")
    @classmethod
    def _one_source(cls, value: str | None, info: ValidationInfo) -> str | None:
        if "path" not in info.data:
            return value  # path's own error is reported instead
        path = info.data["path"]
        if path is not None and value is not None:
            raise ValueError("give path (a JSONL file) or dataset (a Hugging Face dataset), not both")
        if path is None and value is None:
            raise ValueError(
                "the evaluation data is missing: give path (a JSONL file) or dataset "
                "(a Hugging Face dataset name, with split)"
            )
        return value

    @field_validator("config", "split")
    @classmethod
    def _dataset_parts(cls, value: str | None, info: ValidationInfo) -> str | None:
        has_dataset = info.data.get("dataset") is not None
        if value is not None and info.data.get("path") is not None:
            raise ValueError(f"{info.field_name} applies to a dataset, not to path")
        if info.field_name == "split" and value is None and has_dataset:
            raise ValueError("name the dataset's split to evaluate on (e.g. validation)")
        return value

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
    def source(self) -> DataSource:
        """Where the evaluation rows come from."""
        if self.dataset is not None:
            assert self.split is not None  # the validators require it
            return HubSource(
                field="evaluation.dataset", dataset=self.dataset, config=self.config, split=self.split
            )
        assert self.path is not None
        return FileSource(field="evaluation.path", path=self.path)

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
    name: str = Field(min_length=1, max_length=200)
    task: TaskSpec
    teacher: TeacherSpec = TeacherSpec()
    # before the student: its soft labels depend on it
    verification: VerificationSpec = Field(default=VerificationSpec(), validate_default=True)
    student: StudentSpec = Field(default=StudentSpec(), validate_default=True)
    loop: LoopSpec = LoopSpec()
    evaluation: EvaluationSpec | None = None

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
