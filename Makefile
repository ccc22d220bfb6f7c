# Two commands, each sets up what it needs first:
#   make train   pretrain tiny CLIP on the synthetic set, print zero-shot accuracy
#   make test    run the test suite
# KERAS_BACKEND (jax | tensorflow | torch) picks the backend; unset, the recipe
# takes the fastest for the hardware (torch on a CPU, jax with a GPU or TPU).
# ARGS passes flags to the recipe, e.g. make train ARGS="--preset=clip_tiny_max".

PYTHON ?= python3.11
VENV := .venv
ifdef KERAS_BACKEND
export KERAS_BACKEND
endif

STAMP := $(VENV)/.installed
# Test processes (pytest-xdist). One module's tests stay in one process
# (--dist loadscope), so module-scoped fixtures run once.
TEST_WORKERS ?= 2
REQUIREMENTS := requirements/base.txt requirements/test.txt requirements/constraints.txt pyproject.toml

.PHONY: setup train test benchmark clean

setup: $(STAMP)

# The pinned stack (exact pins + the full resolved set as constraints, so pip
# never backtracks), then the package itself, editable, without dependencies.
$(STAMP): $(REQUIREMENTS)
	test -x $(VENV)/bin/python || $(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install -q -U pip
	$(VENV)/bin/pip install -q -r requirements/test.txt -c requirements/constraints.txt
	$(VENV)/bin/pip install -q --no-deps --no-build-isolation -e .
	touch $(STAMP)

train: setup
	$(VENV)/bin/python recipes/pretrain.py $(ARGS)

test: setup
	$(VENV)/bin/python -m pytest -q -n $(TEST_WORKERS) --dist loadscope tests $(ARGS)

benchmark: setup
	$(VENV)/bin/python benchmarks/train_step.py $(ARGS)

clean:
	rm -rf $(VENV) runs
