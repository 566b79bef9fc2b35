"""The teacher checks feedback before it goes into a prompt: the energy band picks the samples the
student is least sure of, and a sample whose label contradicts its text is exactly such a sample.
Fed back with that label, it teaches the teacher the wrong label from its own prompt."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from services.orchestrator.context import RunContext
from shared.db.models import Sample
from shared.schemas.generation import ClassifyRequest
from shared.spec import RunSpec
from shared.task_metrics import cohen_kappa

# Samples per classify request: a step may check more than one request takes (4096), and a smaller
# request shows progress on a CPU teacher.
CHECK_BATCH = 256


def teacher_distributions(
    ctx: RunContext, samples: Sequence[Sample], seeds: Sequence[Sample]
) -> list[dict[str, float]]:
    """The teacher's calibrated label distribution of each sample's inputs, few-shot from the seeds,
    CHECK_BATCH samples a request."""
    task = ctx.spec.task
    distributions: list[dict[str, float]] = []
    for start in range(0, len(samples), CHECK_BATCH):
        batch = samples[start : start + CHECK_BATCH]
        request = ClassifyRequest(
            task=task,
            model=ctx.spec.teacher.served_model,
            examples=[s.fields for s in seeds],
            inputs=[{f: s.fields[f] for f in task.input_fields} for s in batch],
        )
        distributions += [p.probabilities for p in ctx.call(ctx.generator.classify, request).predictions]
        ctx.show_progress(len(distributions), len(samples), "samples checked by the teacher")
    return distributions


def top_label(probabilities: dict[str, float]) -> str:
    return max(probabilities, key=probabilities.__getitem__)


def requested_label(sample: Sample) -> str:
    """The label the generator was asked to write (a relabelled sample keeps it here)."""
    return sample.requested_label or sample.label or ""


def teacher_kappa(pairs: Sequence[tuple[str, str]]) -> float:
    """Cohen's kappa of (requested label, teacher's label) pairs: the teacher's agreement beyond
    what its label prior alone gives."""
    return cohen_kappa([p[0] for p in pairs], [p[1] for p in pairs])


def trusts_teacher(spec: RunSpec, kappa: float) -> bool:
    """Whether the teacher's labels may replace the requested ones (teacher.min_kappa)."""
    return spec.teacher.min_kappa is None or kappa >= spec.teacher.min_kappa


@dataclass(frozen=True)
class LabelDecision:
    teacher_label: str  # the teacher's likelihood label
    label: str  # what the sample keeps (and is trained on, fed back with)
    confidence: float  # the teacher's probability of `label`
    keep: bool


def decide_label(
    probabilities: dict[str, float], label: str, policy: str, min_confidence: float
) -> LabelDecision:
    """The one rule for the teacher's check of a label (verification.policy, loop.feedback_check):
    relabel takes the teacher's label, drop leaves out a label the teacher disagrees with, keep
    changes nothing; whatever the policy, a label the teacher gives less than `min_confidence` is
    left out."""
    teacher_label = top_label(probabilities)
    decided = teacher_label if policy == "relabel" else label
    confidence = probabilities.get(decided, 0.0)
    disagrees = policy == "drop" and teacher_label != label
    return LabelDecision(teacher_label, decided, confidence, confidence >= min_confidence and not disagrees)


@dataclass(frozen=True)
class Checked:
    sample: Sample
    probabilities: dict[str, float]  # the teacher's calibrated distribution over the labels
    teacher_label: str
    confidence: float  # the teacher's probability of the label the sample would be fed back with
    label: str  # what it would be fed back (and trained) with
    keep: bool

    @property
    def relabelled(self) -> bool:
        return self.keep and self.label != requested_label(self.sample)


def check_feedback(ctx: RunContext, band: Sequence[Sample], seeds: Sequence[Sample]) -> list[Checked]:
    """The teacher's calibrated likelihood label of each band sample (reused when verification
    already scored it); relabel or drop as loop.feedback_check says, and leave out labels the
    teacher gives less than loop.feedback_min_confidence."""
    loop = ctx.spec.loop
    unscored = [s for s in band if not s.teacher_probs]
    fresh = teacher_distributions(ctx, unscored, seeds) if unscored else []
    scored = {s.id: probabilities for s, probabilities in zip(unscored, fresh, strict=True)}
    out = []
    for sample in band:
        probabilities = sample.teacher_probs or scored[sample.id]
        d = decide_label(probabilities, sample.label or "", loop.feedback_check, loop.feedback_min_confidence)
        out.append(Checked(sample, probabilities, d.teacher_label, d.confidence, d.label, d.keep))
    return out
