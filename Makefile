# Two commands: `make up` runs the studio, `make test` runs every test.
# Both create .venv and install what is missing on first use, from the committed locks:
# requirements.lock (what the services run on) and requirements-dev.lock (that, plus the test
# and lint tools). Exact versions with hashes, so an upstream release never changes a fresh
# install; `make lock` refreshes both from pyproject.toml's ranges, as a deliberate commit.

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
LOCK   := requirements.lock
DEVLOCK := requirements-dev.lock
# The resolver that writes the locks; pinned like everything else.
UV     := uv==0.13.9
# torch and torchvision stay on the releases the lock was tested with until a deliberate bump.
TORCH  := torch==2.14.1 torchvision==0.29.1

ARGS ?=

.PHONY: up test soak bench lint fmt snapshots lock clean browser prometheus

$(STAMP): pyproject.toml $(LOCK) $(DEVLOCK)
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "AI Studio needs Python 3.11 or newer; found " + sys.version.split()[0])'
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --require-hashes -r $(DEVLOCK)
	$(BIN)/python -m pip install --quiet --no-deps --no-build-isolation -e .
	@touch $(STAMP)

up: $(STAMP)
	$(BIN)/studio up $(ARGS)

test: $(STAMP) lint browser prometheus
	$(BIN)/python -m pytest $(ARGS)

# The longer fault scenarios (tests marked `soak`, bigger sizes through STUDIO_SOAK=1): never
# part of `make test`, which runs every scenario at a bounded size.
soak: $(STAMP)
	STUDIO_SOAK=1 $(BIN)/python -m pytest -m soak $(ARGS)

# Every performance figure as one table, each a ratio against a baseline measured side by side
# in the same run (bench/README.md); also written to the git-ignored bench/results.json.
bench: $(STAMP)
	$(BIN)/python -m bench $(ARGS)

# The pages' browser tests drive the system's Chromium through Playwright (never a downloaded
# browser): installed from Debian's packages when missing on a Debian machine run as root;
# anywhere else the browser tests are skipped and say why.
CHROMIUM ?= /usr/bin/chromium
browser:
	@test -x $(CHROMIUM) || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    echo "Installing Debian's chromium for the browser tests (once)"; \
	    { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium \
	      >/dev/null; } || echo "Could not install chromium: the browser tests will be skipped"; \
	  else \
	    echo "No $(CHROMIUM), and no root apt-get to install it: browser tests will be skipped"; \
	  fi; }

# The dashboards' proof scrapes a running studio with a real Prometheus and evaluates every
# panel's query through its HTTP API: Debian's prometheus (and promtool) installed when missing
# on a Debian machine run as root; anywhere else those tests are skipped and say why.
PROMETHEUS ?= /usr/bin/prometheus
prometheus:
	@test -x $(PROMETHEUS) || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    echo "Installing Debian's prometheus for the dashboard tests (once)"; \
	    { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq prometheus \
	      >/dev/null; } || echo "Could not install prometheus: the dashboard tests will be skipped"; \
	  else \
	    echo "No $(PROMETHEUS), and no root apt-get to install it: dashboard tests will be skipped"; \
	  fi; }

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

fmt: $(STAMP)
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

snapshots: $(STAMP)
	$(BIN)/python -m contracts.snapshot --write

# Refresh both locks from pyproject.toml's ranges (every platform, Python 3.11 and newer), then
# reinstall. Commit the result on its own and run .ci/run on a fresh clone before landing it.
lock: $(STAMP)
	$(BIN)/python -m pip install --quiet $(UV)
	printf '%s\n' $(TORCH) > $(VENV)/lock-pins.txt
	printf 'setuptools>=68\n' | $(BIN)/uv pip compile --quiet --universal --python-version 3.11 \
	    --generate-hashes --no-header -c $(VENV)/lock-pins.txt -o $(LOCK) pyproject.toml -
	printf 'setuptools>=68\n' | $(BIN)/uv pip compile --quiet --universal --python-version 3.11 \
	    --generate-hashes --no-header -c $(LOCK) --extra dev -o $(DEVLOCK) pyproject.toml -
	$(BIN)/python -m pip uninstall --quiet --yes uv
	rm -f $(STAMP) $(VENV)/lock-pins.txt
	$(MAKE) $(STAMP)

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
