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
# A second environment for TensorFlow Data Validation, which pins TensorFlow < 2.17 on
# glibc 2.36 (requirements/validate.txt); keras_maeclip.data.validate runs its TFDV step
# there by itself. Not needed where `pip install keras-maeclip[validate]` works.
VALIDATE_VENV := .venv-validate
VALIDATE_STAMP := $(VALIDATE_VENV)/.installed
# Test processes (pytest-xdist). One module's tests stay in one process
# (--dist loadscope), so module-scoped fixtures run once.
TEST_WORKERS ?= 2
REQUIREMENTS := requirements/base.txt requirements/test.txt requirements/constraints.txt pyproject.toml

.PHONY: setup validate-env train test benchmark clean

setup: $(STAMP)

# The pinned stack (exact pins + the full resolved set as constraints, so pip
# never backtracks), then the package itself, editable, without dependencies.
$(STAMP): $(REQUIREMENTS)
	test -x $(VENV)/bin/python || $(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install -q -U pip
	$(VENV)/bin/pip install -q -r requirements/test.txt -c requirements/constraints.txt
	$(VENV)/bin/pip install -q --no-deps --no-build-isolation -e .
	touch $(STAMP)

validate-env: $(VALIDATE_STAMP)

$(VALIDATE_STAMP): requirements/validate.txt requirements/validate-constraints.txt
	test -x $(VALIDATE_VENV)/bin/python || $(PYTHON) -m venv $(VALIDATE_VENV)
	$(VALIDATE_VENV)/bin/pip install -q -U pip
	$(VALIDATE_VENV)/bin/pip install -q -r requirements/validate.txt -c requirements/validate-constraints.txt
	touch $(VALIDATE_STAMP)

train: setup
	$(VENV)/bin/python recipes/pretrain.py $(ARGS)

# The suite runs the data-validation tests through the TFDV environment.
test: setup validate-env
	$(VENV)/bin/python -m pytest -q -n $(TEST_WORKERS) --dist loadscope --durations=15 tests $(ARGS)

benchmark: setup
	$(VENV)/bin/python benchmarks/train_step.py $(ARGS)

clean:
	rm -rf $(VENV) $(VALIDATE_VENV) runs
