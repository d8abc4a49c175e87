# The two contract targets are `make repro` and `make test`; both bootstrap .venv from the pins.
SHELL := /bin/bash
PYTHON ?= python3.11
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.requirements.sha256

.PHONY: venv java repro test test-quick lint format world world-search world-choose bench repro-time compare compare-sweep clean-venv

# The LightFM check runs on every `make venv`, so an existing venv picks up new flags without a requirements change.
venv: $(STAMP)
	$(build_lightfm)

# LightFM (sdist only) is built with Python's own flags (LIGHTFM_NO_CFLAGS: not its -march=native -ffast-math), so its
# fit, and so the listening world, has the same bytes on every x86-64 machine (a native build follows the CPU's vector
# units and reorders sums). Of -ffast-math it keeps only the two parts that change no value: sqrt inlined without
# setting errno, and no floating-point traps (the default world's fit 104 s against 130 s, the same bytes). Where the
# processor has AVX2 and FMA (the Haswell code botify_lab.kernels pins numba to) it adds Haswell's instructions with
# no multiply-add contraction (-ffp-contract=off) and no reassociation: element-wise loops run 8 floats wide, every
# sum keeps its order, so the factors are the same bytes (checked on the default world), about 10% sooner (2 epochs
# on 8,000 listeners' history, three fits of each build interleaved: 28.3 s against 31.4 s). Built with
# --no-cache-dir, since pip's wheel cache would hand back a build made with other flags; a venv install rebuilds it
# when the pin or the flags differ from the ones recorded in $(LIGHTFM_BUILT).
LIGHTFM_CFLAGS := -DNDEBUG -g -fwrapv -O3 -Wall -fno-math-errno -fno-trapping-math \
  $(shell grep -qw avx2 /proc/cpuinfo 2>/dev/null && grep -qw fma /proc/cpuinfo && echo -march=haswell -ffp-contract=off)
LIGHTFM_PIN = $(shell grep -E '^lightfm-next==' requirements.txt)
LIGHTFM_BUILT := $(VENV)/.lightfm-build

# LightFM from source, unless the venv holds a build of this pin with these flags.
define build_lightfm
@if [ "$$(cat $(LIGHTFM_BUILT) 2>/dev/null)" != "$(LIGHTFM_PIN) $(LIGHTFM_CFLAGS)" ]; then \
  echo "building $(LIGHTFM_PIN) from source (about a minute)"; \
  LIGHTFM_NO_CFLAGS=1 CFLAGS="$(LIGHTFM_CFLAGS)" $(PY) -m pip install --quiet --disable-pip-version-check \
    --no-cache-dir --no-deps --force-reinstall "$(LIGHTFM_PIN)" && \
  echo "$(LIGHTFM_PIN) $(LIGHTFM_CFLAGS)" > $(LIGHTFM_BUILT); fi
endef

# Rebuild the venv only when requirements.txt (or pyproject.toml) changed since the last install.
$(STAMP): requirements.txt pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(build_lightfm)
	$(PY) -m pip install --quiet --disable-pip-version-check -r requirements.txt
	$(PY) -m pip install --quiet --disable-pip-version-check --no-deps --no-build-isolation -e .
	@cat requirements.txt pyproject.toml | sha256sum > $(STAMP)

# Java for the Spark analysis engine (PySpark needs a JVM); installed with apt when missing.
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
java:
	@command -v java >/dev/null 2>&1 || { echo "java missing: installing openjdk-17-jre-headless (Spark)"; \
	  $(SUDO) mkdir -p /usr/share/man/man1 && $(SUDO) apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq openjdk-17-jre-headless >/dev/null; }

# The stages run several at a time (as many as cores, at most 4); `make repro JOBS=1` runs a plain `dvc repro`.
repro: venv java
	$(PY) -m botify_lab.pipeline.bootstrap repro $(if $(JOBS),--jobs $(JOBS))

# The suite runs on as many pytest-xdist workers as cores (at most 4), a test file to a worker, in the collection's
# order (tests/pipeline/conftest.py puts the tiny pipeline's steps first): a file's module fixtures (a Spark session,
# a simulated world) are built once, and the tiny pipeline's steps run in order on one session's clones. (`--dist
# loadgroup` grouped nothing here: with pytest 9.2 the xdist_group marks left every node id as it was.)
TEST_WORKERS := -n auto --maxprocesses=4 --dist loadfile --no-loadscope-reorder

test: venv java
	$(PY) -m pytest $(TEST_WORKERS)

# The suite without the tests marked slow (the end-to-end pipeline runs, the Spark checks), for quick local loops.
test-quick: venv
	$(PY) -m pytest -m "not slow" $(TEST_WORKERS)

# ruff, configured in pyproject.toml; tests/architecture/test_lint.py runs the same checks inside `make test`.
lint: venv
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .

format: venv
	$(PY) -m ruff format .
	$(PY) -m ruff check --fix .

world: venv
	$(PY) -m botify_lab.pipeline.bootstrap world

# Search the world generator's knobs against the course's real logs and the published TOP_POP table (in process,
# 15-35 minutes on 2 cores); rewrites metrics/fidelity_search.csv. It plays only what needs no training, so
# `make world-choose` then runs the best candidates through the pipeline (the 2023 Contextual, the training data); set
# the chosen knobs in params.yaml `world:` and `make world` to adopt them (README, "How the default world was found").
world-search: venv
	$(PY) -m botify_lab.tools.world_search

# Choose among the search's survivors (every in-process check passed) by complete runs: the 3 best of
# metrics/fidelity_search.csv, each in a clone of HEAD with its knobs, `make world` and `dvc repro fidelity` (about 6
# minutes each on 2 cores); ranks them by their metrics/fidelity.json in metrics/fidelity_search_complete.csv.
world-choose: venv
	$(PY) -m botify_lab.tools.world_search --from-table --complete $(or $(CANDIDATES),3)

bench: venv
	@for script in bench/*.py; do echo "== $$script"; $(PY) $$script; done

# How long the main job takes from nothing (a clone of HEAD), per stage; several minutes.
repro-time: venv
	bash bench/repro_time.sh

# The experiments beside the workspace: the params that differ and the headline metrics, as a Markdown table.
compare:
	@test -x $(VENV)/bin/dvc || { echo "no .venv yet: run \`make repro\` first" >&2; exit 2; }
	@$(VENV)/bin/dvc exp show --md --only-changed --drop 'Created|State|Executor'

# The sweep across experiments: the grid beside each variant's effect on time per session (metrics/sweep.json).
compare-sweep:
	@test -x $(VENV)/bin/dvc || { echo "no .venv yet: run \`make repro\` first" >&2; exit 2; }
	@$(VENV)/bin/dvc exp show --md --drop '.*' --keep 'Experiment|sweep\.grid|variants\..*\.effect$$'

clean-venv:
	rm -rf $(VENV)
