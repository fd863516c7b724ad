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
	$(BIN)/ruff check testbed tests benchmarks compat

bench: venv
	@for script in benchmarks/*.py; do echo "== $$script"; $(BIN)/python $$script || exit 1; done

proto: venv
	$(BIN)/python -m testbed.bridge.protogen testbed/bridge/generated

clean:
	rm -rf $(VENV) runs .pytest_cache

# LeRobot compatibility proof in LeRobot's own environment (~8 GB: torch comes with lerobot), kept
# outside the clone at ~/.cache/testbed/venvs/lerobot-<hash of compat/lerobot-requirements.txt>
# ($TESTBED_CACHE_DIR or $XDG_CACHE_HOME move it) and shared by every clone; compat/envcache.py builds it.
.PHONY: compat compat-env

compat-env: venv
	$(BIN)/python compat/envcache.py lerobot

compat: compat-env
	$(BIN)/python compat/check.py
