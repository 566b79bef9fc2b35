"""bench/gpu_check.sh on CPU, in a Python that sees only torch, transformers (with what they require)
and gpu_check.py's WHEELHOUSE: the GPU image has no project install, so an import the wheel list does
not cover must fail here rather than on the rare GPU machine."""

from __future__ import annotations

import importlib.metadata as md
import json
import os
import re
import subprocess
import sys
from pathlib import Path

from bench.gpu_check import WHEELHOUSE

ROOT = Path(__file__).resolve().parents[2]


def _closure(names: list[str]) -> set[str]:
    """The distributions `names` require, transitively (extras left out), installed here."""
    seen: set[str] = set()
    todo = list(names)
    while todo:
        name = re.split(r"[<>=!~ ;\[(]", todo.pop(), maxsplit=1)[0].strip().lower().replace("_", "-")
        if name in seen:
            continue
        try:
            dist = md.distribution(name)
        except md.PackageNotFoundError:
            continue  # a platform-specific requirement not installed here
        seen.add(name)
        todo += [r for r in dist.requires or [] if "extra ==" not in r]
    return seen


def _bare_site(folder: Path, names: list[str]) -> None:
    """A site folder of symlinks to those distributions' files only (their dist-info too, so
    transformers' availability checks see exactly them)."""
    folder.mkdir()
    for name in sorted(_closure(names)):
        dist = md.distribution(name)
        for top in {Path(str(f)).parts[0] for f in dist.files or []}:
            source = Path(str(dist.locate_file(top)))
            if not top.startswith("..") and source.exists() and not (folder / top).exists():
                (folder / top).symlink_to(source)


def test_gpu_check_runs_on_cpu_with_only_torch_transformers_and_the_wheel_list(tmp_path: Path) -> None:
    site = tmp_path / "site"
    _bare_site(site, ["torch", "transformers", *WHEELHOUSE.values()])
    python = tmp_path / "python"
    # -S: no site-packages, so nothing of this venv but the bare site folder is importable.
    python.write_text(
        f'#!/bin/sh\nPYTHONPATH="${{PYTHONPATH:+$PYTHONPATH:}}{site}" exec {sys.executable} -S "$@"\n'
    )
    python.chmod(0o755)
    args = ["--device", "cpu", "--examples", "8", "--holdout", "4", "--epochs", "1", "--score", "16"]
    args += ["--causal-layers", "2"]  # SmolLM2's 30 take a minute on 2 CPU cores; the path is the same
    env = {**os.environ, "PYTHON": str(python)}
    env.pop("PYTHONPATH", None)
    out = subprocess.run(
        ["bench/gpu_check.sh", *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=600
    )
    assert out.returncode == 0, out.stderr[-3000:]
    figures = json.loads(out.stdout.strip().splitlines()[-1])
    assert figures["passed"] is True and figures["device"] == "cpu"
    for kind in ("classifier", "seq2seq", "causal"):
        assert figures[kind]["train_device"] == figures[kind]["score_device"] == "cpu"
        assert figures[kind]["train_examples_per_s"] > 0 and figures[kind]["score_examples_per_s"] > 0
        assert figures[kind]["energies_finite"] is True
