PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: venv demo test bench proto lint clean

venv: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

demo: venv
	$(BIN)/testbed launch launch/factory_cell.yaml

test: venv
	$(BIN)/python -m pytest -q tests

lint: venv
	$(BIN)/ruff check testbed tests benchmarks

bench: venv
	@for script in benchmarks/*.py; do echo "== $$script"; $(BIN)/python $$script || exit 1; done

proto: venv
	$(BIN)/python -m testbed.bridge.protogen testbed/bridge/generated

clean:
	rm -rf $(VENV) runs .pytest_cache

# LeRobot compatibility proof in a separate env (several GB: torch comes with lerobot).
# lerobot 0.4.4 pins torch<2.11 and torchvision<0.26, so the CPU torch 2.13 wheel does not fit it;
# torch 2.9.1 + torchvision 0.24.1 are installed first so pip does not pick torch by itself.
COMPAT_VENV := .compat-venv
COMPAT_STAMP := $(COMPAT_VENV)/.installed

.PHONY: compat

$(COMPAT_STAMP):
	test -x $(COMPAT_VENV)/bin/python || $(PYTHON) -m venv $(COMPAT_VENV)
	$(COMPAT_VENV)/bin/python -m pip install --quiet torch==2.9.1 torchvision==0.24.1
	$(COMPAT_VENV)/bin/python -m pip install --quiet lerobot==0.4.4
	touch $(COMPAT_STAMP)

compat: venv $(COMPAT_STAMP)
	$(BIN)/python compat/check.py --venv $(COMPAT_VENV)
