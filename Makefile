# Two entry points, both self-installing: `make demo` (the whole pipeline on the default model) and `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# Python never puts the current directory on sys.path (-P / PYTHONSAFEPATH, Python >= 3.11): from the repo root the
# folders kernels/, eval/, engine/ ... would otherwise shadow installed packages of those names (transformers imports
# HF's `kernels`). Exported, so every Python that a test or the TUI starts inherits it.
export PYTHONSAFEPATH := 1
# evaluation data for the demo's lm-eval tasks only when the user points at some (KVANT_EVAL_DATA=DIR make demo);
# without it the demo validates offline on what ships with kvant
ifneq ($(strip $(KVANT_EVAL_DATA)),)
export KVANT_EVAL_DATA
endif

.PHONY: demo test install clean

demo: $(VENV)/.installed
	$(BIN)/kvant demo

# One pytest process per test folder, two folders at a time, then tests/server alone (tests/run_folders.sh; JOBS=1
# for one at a time). The default model is pulled first, once, so that no two folders convert it at the same time.
# Every folder runs; any failure fails the target.
TEST_DIRS := $(sort $(dir $(wildcard tests/*/test_*.py)))
JOBS ?= 2

# The layer contract (pyproject.toml [tool.importlinter]) is checked first: a back-import fails the target.
test: $(VENV)/.installed
	$(BIN)/lint-imports --no-cache
ifdef PYTEST_ARGS
	$(BIN)/python -P -m pytest -q -ra $(PYTEST_ARGS)
else
	-$(BIN)/python -P -c "from kvant.engine.registry import pull_default; print('default model:', pull_default())"
	BIN=$(BIN) JOBS=$(JOBS) bash tests/run_folders.sh $(TEST_DIRS)
endif

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml setup.py .ci/install
	PYTHON=$(PYTHON) bash .ci/install $(VENV)
	touch $@

clean:
	rm -rf $(VENV) build *.egg-info
