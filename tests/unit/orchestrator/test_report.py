import subprocess
import sys


def test_the_run_report_draws_without_pyplot():
    # pyplot's global figure state is not safe in the orchestrator's request threads.
    code = "import sys, services.orchestrator.report; assert 'matplotlib.pyplot' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)


def _failed_gold_run():
    import uuid

    from services.orchestrator.report import RunData
    from shared.spec import RunSpec
    from tests.support import sentiment_task

    error = "generator: http://127.0.0.1:8001 unreachable (gave up after 600 s of waiting; "
    error += "GOLD_DEPENDENCY_PATIENCE_S)"
    spec = RunSpec.model_validate({"name": "g", "task": sentiment_task(), "loop": {"feedback": True}})
    return RunData(uuid.uuid4(), "g", "failed", error, spec, [], [])


def test_a_run_that_failed_before_its_first_iteration_leads_with_its_error():
    from services.orchestrator.report import render_report

    page = render_report([_failed_gold_run()])
    assert page.index("The run failed in the generator") < page.index("Metric per iteration")
    assert "unreachable" in page and "GOLD_DEPENDENCY_PATIENCE_S" in page
    assert "<img" not in page  # no empty charts
    assert "vanilla" not in page  # a gold run's missing energies are not called vanilla
