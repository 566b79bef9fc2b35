#!/usr/bin/env bash
# The prepared GPU check: the trainer and the scorer on CUDA in bf16, one job each per student kind
# (bench/gpu_check.py says what runs). Needs python with torch and transformers, nothing installed from
# this project: the project's code runs from this checkout (PYTHONPATH=.), and the handful of
# dependencies its trainer and scorer modules import beyond torch and transformers (pydantic,
# pydantic-settings, fastapi, starlette, sqlalchemy and theirs: WHEELHOUSE in gpu_check.py) are
# installed from .gpu-check/wheels into a temporary folder when the image lacks them.
#
#   bench/gpu_check.sh --prepare     # with network access (here): fill .gpu-check/wheels (~15 MB)
#   bench/gpu_check.sh [ARGS]        # on the GPU machine, offline; ARGS go to gpu_check.py
#                                    # (--device cpu runs the same path on CPU)
#
# Capped at 5 minutes (GOLD_GPU_CHECK_TIMEOUT_S); the last line of output is one JSON object with the
# figures; exit status 0 only when every check passed.
set -euo pipefail
cd "$(dirname "$0")/.."
WHEELS=.gpu-check/wheels
PY=${PYTHON:-python3}
# The import names in WHEELHOUSE, as distributions: pydantic-core is the one compiled wheel among them.
PURE="pydantic annotated-types typing-inspection typing-extensions pydantic-settings python-dotenv
fastapi starlette annotated-doc anyio idna sqlalchemy"

if [[ "${1:-}" == "--prepare" ]]; then
    mkdir -p "$WHEELS"
    pip=(.venv/bin/pip download --quiet --no-deps --only-binary=:all: -c constraints.txt -d "$WHEELS")
    # shellcheck disable=SC2086
    "${pip[@]}" --platform any --python-version 3.11 $PURE
    for version in 3.10 3.11 3.12 3.13 3.14; do  # the GPU image's python is not known in advance
        "${pip[@]}" --platform manylinux2014_x86_64 --python-version "$version" pydantic-core ||
            echo "no pydantic-core wheel for python $version" >&2
    done
    du -sh "$WHEELS"
    exit 0
fi

export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 TOKENIZERS_PARALLELISM=false
missing=$(PYTHONPATH=. "$PY" bench/gpu_check.py --missing)
deps=""
if [[ -n "$missing" ]]; then
    [[ -d "$WHEELS" ]] || { echo "missing $missing and no $WHEELS: run bench/gpu_check.sh --prepare first" >&2; exit 2; }
    deps=$(mktemp -d)
    trap 'rm -rf "$deps"' EXIT
    echo "installing into $deps: $missing" >&2
    # shellcheck disable=SC2086
    "$PY" -m pip install --quiet --no-index --no-deps --find-links "$WHEELS" --target "$deps" $missing
fi
PYTHONPATH=".${deps:+:$deps}" timeout "${GOLD_GPU_CHECK_TIMEOUT_S:-300}" "$PY" bench/gpu_check.py "$@"
