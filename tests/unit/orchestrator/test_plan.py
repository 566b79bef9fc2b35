import pytest

from services.orchestrator.plan import build_plan, plateaued, steps_past_plateau, steps_past_time_budget
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
        (0, "attributes"),  # the teacher lists what OOD prompts are steered to, once
        (1, "generate_train"),
        (1, "generate_ood"),
        (1, "verify"),  # the teacher checks the labels (verification.policy auto: relabel)
        (1, "train"),
        (1, "score"),
        (1, "select"),
        (2, "generate_train"),
        (2, "generate_ood"),
        (2, "verify"),
        (2, "train"),
        (2, "score"),
        (2, "select"),
        (3, "final_train"),
    ]


def test_vanilla_plan_has_no_ood_and_same_budget():
    vanilla = {**SPEC, "loop": {**SPEC["loop"], "feedback": False}}
    assert [s for _, s in stages(vanilla)] == [
        "generate_train",
        "verify",
        "train",
        "generate_train",
        "verify",
        "train",
        "final_train",
    ]
    assert RunSpec.model_validate(vanilla).loop.train_samples_per_iteration == 14


def test_teacher_baseline_comes_first_with_evaluation(tmp_path):
    data = tmp_path / "d.jsonl"
    data.write_text("")
    spec = {**SPEC, "evaluation": {"path": str(data)}}
    assert stages(spec)[0] == (0, "teacher_eval")
    spec["evaluation"]["teacher_baseline"] = False
    assert stages(spec)[0] == (0, "attributes")


def test_reference_student_follows_the_teacher_baseline(tmp_path):
    data = tmp_path / "d.jsonl"
    data.write_text("")
    spec = {**SPEC, "evaluation": {"path": str(data), "reference_path": str(data)}}
    assert stages(spec)[:3] == [(0, "teacher_eval"), (0, "reference_train"), (0, "attributes")]


def test_time_budget_skips_iterations_not_yet_begun():
    spec = RunSpec.model_validate({**SPEC, "loop": {**SPEC["loop"], "iterations": 3, "max_seconds": 60}})
    plan = build_plan(spec)
    first_of_2 = plan.index(next(s for s in plan if s.iteration == 2))
    first_of_3 = plan.index(next(s for s in plan if s.iteration == 3))
    done_1 = {(s.iteration, s.stage) for s in plan[:first_of_2]}
    # within budget, or the first iteration: nothing skipped
    assert steps_past_time_budget(spec, plan, first_of_2, done_1, elapsed_s=59) == []
    assert steps_past_time_budget(spec, plan, 0, set(), elapsed_s=600) == []
    # over budget before iteration 2: iterations 2 and 3 are skipped, the final student is not
    skipped = steps_past_time_budget(spec, plan, first_of_2, done_1, elapsed_s=61)
    assert {s.iteration for s in skipped} == {2, 3} and len(skipped) == 12
    # an iteration already begun is finished; the budget stops the next one
    done_2 = done_1 | {(2, "generate_train")}
    assert steps_past_time_budget(spec, plan, first_of_2 + 1, done_2, elapsed_s=61) == []
    assert {s.iteration for s in steps_past_time_budget(spec, plan, first_of_3, done_2, elapsed_s=61)} == {3}
    # no budget set: never skipped
    unlimited = RunSpec.model_validate(SPEC)
    assert steps_past_time_budget(unlimited, build_plan(unlimited), 5, done_1, elapsed_s=1e9) == []


def test_plateau_means_no_new_best_for_patience_iterations():
    assert not plateaued([0.7], 1) and not plateaued([0.7, 0.8], 1)
    assert plateaued([0.7, 0.7], 1) and plateaued([0.8, 0.7], 1)
    assert not plateaued([0.8, 0.7], 2) and plateaued([0.8, 0.7, 0.75], 2)
    assert not plateaued([0.8, 0.7, 0.9], 2)


def test_plateau_skips_the_iterations_not_yet_begun():
    spec = RunSpec.model_validate({**SPEC, "loop": {**SPEC["loop"], "iterations": 3, "patience": 1}})
    plan = build_plan(spec)
    first_of_2 = plan.index(next(s for s in plan if s.iteration == 2))
    done_1 = {(s.iteration, s.stage) for s in plan[:first_of_2]}
    assert steps_past_plateau(spec, plan, first_of_2, done_1, history=[0.9]) == []
    assert {s.iteration for s in steps_past_plateau(spec, plan, first_of_2, done_1, [0.9, 0.8])} == {2, 3}
    off = RunSpec.model_validate({**SPEC, "loop": {**SPEC["loop"], "patience": None}})
    assert steps_past_plateau(off, build_plan(off), first_of_2, done_1, [0.9, 0.8, 0.1]) == []


def test_the_student_few_shot_baseline_is_a_step_of_causal_students_only():
    task = {
        "type": "seq2seq",
        "description": "d",
        "input_fields": ["question"],
        "output_field": "answer",
        "seed_examples": [{"question": "x", "answer": "a"}, {"question": "y", "answer": "b"}],
    }
    spec = {**SPEC, "task": task, "evaluation": {"path": "e.jsonl", "student_baseline": True}}
    assert stages(spec)[:2] == [(0, "teacher_eval"), (0, "student_eval")]
    with pytest.raises(ValueError, match="only a causal student"):
        RunSpec.model_validate({**spec, "student": {"model": "tiny-t5"}})


def test_a_run_of_no_iterations_measures_only_its_baselines(tmp_path):
    data = tmp_path / "d.jsonl"
    data.write_text("")
    spec = {**SPEC, "loop": {"iterations": 0}, "evaluation": {"path": str(data)}}
    assert stages(spec) == [(0, "teacher_eval")]  # no attributes, no loop, no final student
