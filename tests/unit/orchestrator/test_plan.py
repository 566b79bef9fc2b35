from services.orchestrator.plan import build_plan, train_samples_per_iteration
from shared.spec import RunSpec

SPEC = {
    "name": "t",
    "task": {
        "type": "classification",
        "description": "d",
        "input_fields": ["text"],
        "output_field": "label",
        "labels": ["a", "b"],
        "seed_examples": [{"text": "x", "label": "a"}, {"text": "y", "label": "b"}],
    },
    "loop": {"iterations": 2, "samples_per_iteration": 10, "ood_samples_per_iteration": 4},
}


def stages(spec: dict) -> list[tuple[int, str]]:
    return [(s.iteration, s.stage) for s in build_plan(RunSpec.model_validate(spec))]


def test_gold_plan_orders_the_method_steps():
    assert stages(SPEC) == [
        (1, "generate_train"),
        (1, "generate_ood"),
        (1, "train"),
        (1, "score"),
        (1, "select"),
        (2, "generate_train"),
        (2, "generate_ood"),
        (2, "train"),
        (2, "score"),
        (2, "select"),
        (3, "final_train"),
    ]


def test_vanilla_plan_has_no_ood_and_same_budget():
    vanilla = {**SPEC, "loop": {**SPEC["loop"], "feedback": False}}
    assert [s for _, s in stages(vanilla)] == [
        "generate_train",
        "train",
        "generate_train",
        "train",
        "final_train",
    ]
    assert train_samples_per_iteration(RunSpec.model_validate(vanilla)) == 14


def test_teacher_baseline_comes_first_with_evaluation(tmp_path):
    data = tmp_path / "d.jsonl"
    data.write_text("")
    spec = {**SPEC, "evaluation": {"path": str(data)}}
    assert stages(spec)[0] == (0, "teacher_eval")
    spec["evaluation"]["teacher_baseline"] = False
    assert stages(spec)[0] == (1, "generate_train")
