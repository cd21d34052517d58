# Two entry points for a fresh machine with Python 3.11 and make:
#   make demo   generate the demo world, run the Flyte workflow locally, print where results are
#   make test   lint + the test suite
# Both create .venv on first use. torch/torchvision are pinned as a pair so that timm imports
# (a mismatched torchvision fails with "operator torchvision::nms does not exist").

PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
TORCH_PINS := torch==2.14.1 torchvision==0.29.1
DEMO_DIR ?= demo_output

.PHONY: demo test lint venv clean-demo

venv: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade "pip>=25"
	$(BIN)/python -m pip install --quiet $(TORCH_PINS)
	$(BIN)/python -m pip install --quiet -e ".[dev]" $(TORCH_PINS)
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
