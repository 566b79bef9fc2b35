"""What a run shows in MLflow (services/orchestrator/tracking/content.py), without a server: the
flattened spec within MLflow's limits, and the experiment and tags of `gold eval`'s runs."""

from __future__ import annotations

import uuid

from services.orchestrator.tracking.content import (
    MAX_PARAM_KEY,
    MAX_PARAM_VALUE,
    experiment_name,
    flatten,
    run_tags,
)
from shared.db.models import Run


def _run(name: str, key: str | None = None, **spec) -> Run:
    return Run(id=uuid.uuid4(), name=name, idempotency_key=key, status="running", spec={"name": name, **spec})


def test_the_spec_flattens_to_dotted_names_cut_to_mlflows_limits():
    params = flatten(
        {
            "loop": {"iterations": 2, "selection_band": [0.5, 0.8], "patience": None},
            "evaluation": {"input_map": {"text (en)": "sentence"}},
            "task": {"seed_examples": [{"text": "x" * 9000, "label": "positive"}]},
            "k" * 300: {"v": 1},
        }
    )
    assert params["loop.iterations"] == "2" and params["loop.selection_band"] == "[0.5, 0.8]"
    assert params["loop.patience"] == "null"
    assert params["evaluation.input_map.text _en_"] == "sentence"  # MLflow refuses ( and ) in keys
    assert len(params["task.seed_examples"]) == MAX_PARAM_VALUE and params["task.seed_examples"].endswith("…")
    assert all(len(k) <= MAX_PARAM_KEY for k in params)


def test_gold_evals_runs_share_an_experiment_per_spec_and_are_tagged_by_mode_repeat_and_budget():
    key = "gold-eval-" + "ab12" * 8
    gold = _run("sst2-b192-gold-r2", key + "-retry1", loop={"feedback": True})
    vanilla = _run("sst2-b192-vanilla-r0", key, loop={"feedback": False})
    assert experiment_name(gold, "gold") == experiment_name(vanilla, "gold") == "gold eval: sst2"
    tags = run_tags(gold)
    assert tags["gold.eval.mode"] == tags["gold.mode"] == "gold" and tags["gold.eval.repeat"] == "2"
    assert tags["gold.eval.budget"] == "192" and tags["gold.eval.spec_hash"] == "ab12" * 8
    assert run_tags(vanilla)["gold.mode"] == "vanilla"


def test_other_runs_go_to_the_configured_experiment_even_when_named_like_an_eval_run():
    assert experiment_name(_run("sst2-gold-r0"), "team-x") == "team-x"  # no gold eval key
    assert experiment_name(_run("my run", "gold-eval-" + "0" * 32), "team-x") == "team-x"
    assert "gold.eval.repeat" not in run_tags(_run("sst2-gold-r0", "my-key"))
    assert run_tags(_run("baselines", loop={"iterations": 0}))["gold.mode"] == "baselines"
