"""Task metrics from maintained libraries: scikit-learn for classification, rouge-score for ROUGE-L.
One implementation scores the students (trainer) and the teacher's own answers (orchestrator).

Exact match and token F1 follow the official SQuAD v1.1 evaluation (normalise: lower-case, drop
punctuation and articles, collapse whitespace; best score over the acceptable answers). That script
is not packaged on PyPI, and the `evaluate` library fetches its metric code from a hub at run time,
which this machine cannot reach; its few lines are reproduced here.

scikit-learn and rouge-score are imported where they are used: the trainer scores held-out
generated answers by token F1 wherever it trains, bench/gpu_check.sh's bare torch + transformers
image included."""

from __future__ import annotations

import math
import re
import string
from collections import Counter
from collections.abc import Sequence

_ARTICLES = re.compile(r"\b(a|an|the)\b")
_PUNCT = set(string.punctuation)


def classification_metrics(
    predictions: Sequence[str], references: Sequence[str], labels: Sequence[str]
) -> dict[str, float]:
    """accuracy, macro-F1 over the task's label set (a prediction outside it is simply wrong) and
    Cohen's kappa (agreement beyond what the label frequencies alone give: 0 at chance)."""
    from sklearn.metrics import accuracy_score, f1_score

    return {
        "accuracy": float(accuracy_score(references, predictions)),
        "macro_f1": float(
            f1_score(references, predictions, labels=list(labels), average="macro", zero_division=0)
        ),
        "kappa": cohen_kappa(references, predictions),
    }


def cohen_kappa(a: Sequence[str], b: Sequence[str]) -> float:
    """Cohen's kappa of two labelings; 0.0 where undefined (one label on both sides says nothing)."""
    from sklearn.metrics import cohen_kappa_score

    if len(set(a) | set(b)) < 2:
        return 0.0
    kappa = float(cohen_kappa_score(a, b))
    return kappa if math.isfinite(kappa) else 0.0


def normalize_answer(text: str) -> str:
    text = "".join(ch for ch in text.lower() if ch not in _PUNCT)
    return " ".join(_ARTICLES.sub(" ", text).split())


def exact_match(prediction: str, reference: str) -> float:
    return float(normalize_answer(prediction) == normalize_answer(reference))


def token_f1(prediction: str, reference: str) -> float:
    pred, ref = normalize_answer(prediction).split(), normalize_answer(reference).split()
    if not pred or not ref:
        return float(pred == ref)
    common = sum((Counter(pred) & Counter(ref)).values())
    if common == 0:
        return 0.0
    precision, recall = common / len(pred), common / len(ref)
    return 2 * precision * recall / (precision + recall)


def generation_metrics(predictions: Sequence[str], references: Sequence[Sequence[str]]) -> dict[str, float]:
    """SQuAD-style exact match and F1, and ROUGE-L F-measure; each the best over the references."""
    if not predictions:
        return {"exact_match": 0.0, "f1": 0.0, "rouge_l": 0.0}
    from rouge_score import rouge_scorer

    scorer = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=True)
    em = f1 = rouge = 0.0
    for prediction, refs in zip(predictions, references, strict=True):
        em += max(exact_match(prediction, r) for r in refs)
        f1 += max(token_f1(prediction, r) for r in refs)
        rouge += max(scorer.score(r, prediction)["rougeL"].fmeasure for r in refs)
    n = len(predictions)
    return {"exact_match": em / n, "f1": f1 / n, "rouge_l": rouge / n}


def task_scores(
    task_type: str, predictions: Sequence[str], references: Sequence[Sequence[str]], labels: Sequence[str]
) -> dict[str, float]:
    """The task's metrics by name (`EvaluationSpec.metric` picks the headline one): accuracy and
    macro_f1 for classification (the first reference is the label), else exact_match, f1, rouge_l."""
    if task_type == "classification":
        return classification_metrics(predictions, [r[0] for r in references], labels)
    return generation_metrics(predictions, references)
