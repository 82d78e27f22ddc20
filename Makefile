# Stablebill — the two commands a fresh machine needs: `make run` and `make test`.
PYTHON ?= $(shell command -v python3.12 || command -v python3)
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
export DJANGO_SETTINGS_MODULE := config.settings
# Python writes its bytecode caches (__pycache__/, ignored by git) even where the environment
# says not to: every process of `make run` and `make test` (the suite starts some hundred:
# workers, servers, inner test runs) would otherwise compile the project's modules again,
# and pytest rewrite every test module's asserts again, some 3 s of CPU per test process.
unexport PYTHONDONTWRITEBYTECODE

.PHONY: run test lint bench install migrate demo clean e2e-deps node_modules system-packages-run system-packages-test

# The Debian packages beside Python and Node (bin/system-packages): checked first, installed
# when running as root, otherwise the one command to run is printed and make stops here.
system-packages-run:
	bin/system-packages run

system-packages-test:
	bin/system-packages test

$(PY):
	$(PYTHON) -c 'import sys; sys.exit("Python 3.12+ is required, found " + sys.version.split()[0]) if sys.version_info < (3, 12) else None'
	$(PYTHON) -m venv $(VENV)

$(STAMP): $(PY) requirements-dev.lock
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet --require-hashes -r requirements-dev.lock
	touch $(STAMP)

install: $(STAMP)

# The dev chain's tools from npm, pinned in package-lock.json: anvil (bin/anvil, tests/chain.py)
# and solc (contracts/build.js). npm (Node 20+) is required; there is no fallback without it.
# The lock lists anvil's non-linux-x64 binary packages without integrity hashes: the registry
# reachable here serves only linux-x64, and `npm ci` needs every optional package listed.
node_modules/.package-lock.json: package.json package-lock.json
	@command -v npm >/dev/null || { echo "npm is required (Node 20+): apt-get install nodejs npm" >&2; exit 1; }
	npm ci --no-audit --no-fund
	touch $@

node_modules: node_modules/.package-lock.json

# Everything on embedded defaults: SQLite, Celery's filesystem broker, emails in var/mail.
run: export DEBUG ?= 1
run: export PORT ?= 8000
run: export SITE_URL ?= http://127.0.0.1:$(PORT)
run: system-packages-run $(STAMP) node_modules/.package-lock.json
	exec bin/devserver

# Everything runs: a skip or deselection without a reason in tests/skips.py fails the run.
# In parallel (pytest-xdist): `-n auto` is two processes more than there are cores (tests/conftest.py
# says why); TEST_WORKERS=0 runs in one process.
# worksteal hands each worker a contiguous share (a module's tests, and its module-scoped
# fixtures, mostly stay together) and lets an idle worker take from the other's queue.
TEST_WORKERS ?= auto
test: system-packages-test $(STAMP) node_modules/.package-lock.json
	$(PY) -m pytest -n $(TEST_WORKERS) --dist worksteal $(PYTEST_ARGS)

# mypy's Django plugin loads the settings, which want a SECRET_KEY outside DEBUG.
lint: export SECRET_KEY ?= lint-only-not-a-secret
lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy config merchants customers invoices checkout wallets contracts

bench: $(STAMP)
	$(PY) -m pytest tests/bench -o python_files="bench_*.py" -q $(PYTEST_ARGS)

clean:
	rm -rf var/stablebill.sqlite3* var/celery var/mail var/demo-login.txt
