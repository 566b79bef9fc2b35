import subprocess
import sys


def test_the_run_report_draws_without_pyplot():
    # pyplot's global figure state is not safe in the orchestrator's request threads.
    code = "import sys, services.orchestrator.report; assert 'matplotlib.pyplot' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)
