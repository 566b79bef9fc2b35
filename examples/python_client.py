"""GOLD from Python, notebook style (each `# %%` is a cell in VS Code or Jupyter's jupytext): submit
the bundled demo spec, follow the run, print its summary, and load the generated data with `datasets`.

Against a running stack (`gold up` in another terminal):

    python examples/python_client.py

GOLD_ORCHESTRATOR_URL and GOLD_API_TOKEN say where the orchestrator is and which key to present
(default: the local stack, with the key `gold up` wrote to .gold/api_token). The dataset is
exported to ./gold-dataset-<run id>/ (data.parquet and its card, README.md)."""

# %% Connect
import os
from pathlib import Path

import datasets

from gold import Client, NotFoundError, ValidationError
from gold.demo import demo_data
from shared.settings import GoldSettings

settings = GoldSettings()  # reads GOLD_ORCHESTRATOR_URL and GOLD_DATA_DIR
key_file = settings.data_dir / "api_token"
token = os.environ.get("GOLD_API_TOKEN") or (key_file.read_text().strip() if key_file.exists() else None)
gold = Client(settings.orchestrator_url, token)

# %% Submit the demo spec (a dict here; a YAML path or a shared.spec.RunSpec work too)
spec = demo_data().spec  # its evaluation data where this machine has it
run = gold.create_run(spec)
print(f"run {run.id}: {run.name}, {run.status}")


# %% Wait, printing progress whenever the run changes
def show(current):
    step = " · ".join(filter(None, [current.stage, current.stage_progress, f"{current.progress:.0%}"]))
    print(f"{current.status}: iteration {current.iteration} · {step}", flush=True)


summary = gold.wait(run.id, on_progress=show, poll_s=2.0)
print(f"run {summary.run.status}; samples {summary.sample_counts}")
for iteration in summary.iterations:
    metrics = ", ".join(f"{name} {value:.3f}" for name, value in sorted(iteration.metrics.items()))
    print(f"iteration {iteration.index}: {metrics}")

# %% The first page of samples fed back into the prompts
page = next(gold.samples(run.id, selected=True, page_size=5))
print(f"{page.total} samples fed back; the first {len(page.items)}:")
for sample in page.items:
    print(f"  [{sample.label}] {sample.fields}")

# %% The generated data as a Hugging Face dataset: exported with its card, loaded by `datasets`
folder = gold.export_dataset(run.id, Path(f"gold-dataset-{run.id}"))
data = datasets.load_dataset("parquet", data_files=str(folder / "data.parquet"), split="train")
print(data)
print(data.to_pandas().groupby(["gold_kind", "label"]).size().to_string())
print(f"dataset card: {folder / 'README.md'}")

# %% Errors carry the API's message (and, for a 422, the field)
try:
    gold.create_run({**spec, "loop": {**spec["loop"], "selection_band": [0.9, 0.1]}})
except ValidationError as exc:
    print(f"rejected: {exc.field}: {exc.errors[0]['message']}")
try:
    gold.get_run("00000000-0000-0000-0000-000000000000")
except NotFoundError as exc:
    print(f"not found: {exc.message}")
gold.close()
