# Two entry points, both self-installing: `make demo` (the whole pipeline on the default model) and `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# local evaluation data for the demo's lm-eval tasks: the data folder beside the repo, when there is one
KVANT_EVAL_DATA ?= $(abspath $(wildcard ../shared/data))
ifneq ($(strip $(KVANT_EVAL_DATA)),)
export KVANT_EVAL_DATA
endif

.PHONY: demo test install clean

demo: $(VENV)/.installed
	$(BIN)/kvant demo

test: $(VENV)/.installed
	$(BIN)/python -m pytest -q -ra $(PYTEST_ARGS)

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml setup.py .ci/install
	PYTHON=$(PYTHON) bash .ci/install $(VENV)
	touch $@

clean:
	rm -rf $(VENV) build *.egg-info
