PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: venv demo test bench proto lint clean

venv: $(STAMP)

$(STAMP): pyproject.toml scripts/build_ros2_msgs.py
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	@command -v cmake >/dev/null \
	  || { [ "$$(id -u)" = 0 ] && apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq cmake; } \
	  || { echo "cmake is missing and cannot be installed here: run 'apt-get install cmake' as root" >&2; exit 1; }
	$(BIN)/python scripts/build_ros2_msgs.py
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

# The dashboard's front-end library, vendored into the package and committed with its licence, so that
# `pip install` alone serves the page (no build step). Re-run after changing UPLOT_VERSION.
UPLOT_VERSION := 1.6.32
VENDOR := testbed/dashboard/static/vendor
.PHONY: vendor chromium

vendor:
	tmp=$$(mktemp -d) && cd $$tmp && npm pack --silent uplot@$(UPLOT_VERSION) >/dev/null && tar xzf uplot-$(UPLOT_VERSION).tgz \
	  && cd $(CURDIR) && mkdir -p $(VENDOR) \
	  && cp $$tmp/package/dist/uPlot.iife.min.js $$tmp/package/dist/uPlot.min.css $(VENDOR)/ \
	  && cp $$tmp/package/LICENSE $(VENDOR)/LICENSE.uPlot && rm -rf $$tmp
	printf 'uPlot %s (npm package uplot), MIT licence: LICENSE.uPlot. Updated by `make vendor`.\n' $(UPLOT_VERSION) \
	  > $(VENDOR)/README

# Debian's chromium for the dashboard's browser tests: playwright drives it by path (`playwright install`
# downloads its browsers from elsewhere, which cannot work here). Installs it as root when missing.
chromium:
	@command -v chromium >/dev/null \
	  || { [ "$$(id -u)" = 0 ] && apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium; } \
	  || { echo "chromium is missing and cannot be installed here: run 'apt-get install chromium' as root" >&2; exit 1; }
