# Two entry points for a fresh machine with Python 3.11 and make:
#   make demo   generate the demo world, run the Flyte workflow locally, print where results are
#   make test   lint + the test suite
#   make image  build the container image (docker/Dockerfile); prints the tag on its last line
# demo and test create .venv on first use. torch/torchvision are pinned as a pair so that timm imports
# (a mismatched torchvision fails with "operator torchvision::nms does not exist").

PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
TORCH_PINS := torch==2.14.1 torchvision==0.29.1
# The venv installs the versions the image ships and the suite last passed with, so `make test`
# tests what the image runs and a new release upstream cannot break a clean clone overnight.
# `make venv CONSTRAINTS=` installs the newest versions pyproject.toml allows (then
# `make constraints` pins them).
CONSTRAINTS ?= docker/constraints.txt
PIN := $(if $(CONSTRAINTS),--constraint $(CONSTRAINTS))
DEMO_DIR ?= demo_output

.PHONY: demo test lint venv clean-demo image mlflow-image constraints

venv: $(VENV)/.installed

# Reinstalled when pyproject.toml, the pins or this recipe change (pip keeps what already fits).
$(VENV)/.installed: pyproject.toml $(CONSTRAINTS) Makefile
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade "pip>=25"
	$(BIN)/python -m pip install --quiet $(PIN) $(TORCH_PINS)
	$(BIN)/python -m pip install --quiet $(PIN) -e ".[dev]" $(TORCH_PINS)
	$(BIN)/python -c "import timm, torch, torchvision, av, flytekit, mlflow, pandera"
	$(BIN)/python scripts/install_k8s_tools.py
	touch $@

demo: venv
	$(BIN)/autoe2e demo --out $(DEMO_DIR)

lint: venv
	$(BIN)/ruff check autoe2e tasks workflows tests benchmarks scripts
	$(BIN)/ruff format --check autoe2e tasks workflows tests benchmarks scripts

test: lint
	$(BIN)/python -m pytest -q

clean-demo:
	rm -rf $(DEMO_DIR)

# The image for every Flyte task. Talks to the daemon at DOCKER_HOST (or the default socket);
# IMAGE, BASE_IMAGE, PIP_CERT, BACKBONE_WEIGHTS and DOCKER are read from the environment
# (docker/build-image.sh says what each does).
image:
	@docker/build-image.sh pipeline

# The MLflow tracking server image charts/mlflow runs (same settings; prints its tag).
mlflow-image:
	@docker/build-image.sh mlflow

# Pin the image and the venv to the versions the suite passed with (after changing
# pyproject.toml: `make venv CONSTRAINTS=`, `make test`, then this).
constraints: venv
	{ sed -n '1,2p' docker/constraints.txt; $(BIN)/python -m pip freeze --exclude-editable; } > docker/constraints.txt.new
	mv docker/constraints.txt.new docker/constraints.txt
