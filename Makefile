# Scriptline. `make demo` and `make test` work on a fresh clone with nothing running:
# with no DATABASE_URL / CELERY_BROKER_URL set, embedded PostgreSQL and Redis start under var/.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
INSTALLED := $(VENV)/.installed

# mypy's Django plugin loads the settings; placeholder URLs keep it from starting embedded servers
# (nothing connects to them).
MYPY := DATABASE_URL=postgres://mypy@localhost/mypy CELERY_BROKER_URL=memory:// $(BIN)/mypy

.PHONY: install browser-deps test-deps bench-deps demo test test-fast test-browser bench bench-load bench-e2e bench-scale lint migrate stop clean

$(INSTALLED): requirements.txt requirements-dev.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -r requirements-dev.txt
	touch $@

install: $(INSTALLED)

migrate: install
	$(BIN)/python manage.py migrate --noinput

demo: install
	$(BIN)/python scripts/demo.py

# The browser tests drive Debian's Chromium (Playwright cannot download browsers here).
CHROMIUM := /usr/bin/chromium
browser-deps:
	@test -x $(CHROMIUM) || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium; }
	@test -x $(CHROMIUM) || { echo "Chromium is missing: apt-get install chromium"; exit 1; }

# Everything the suite starts besides Python: Chromium, and PgBouncer (tests/test_pgbouncer.py).
test-deps: browser-deps
	@command -v pgbouncer >/dev/null || test -x /usr/sbin/pgbouncer || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq pgbouncer; }

# The test suite uses its own Redis database number so it never consumes a running demo's tasks.
test: install test-deps
	EMBEDDED_REDIS_DB=$${EMBEDDED_REDIS_DB:-1} $(BIN)/python -m pytest

test-fast: install
	EMBEDDED_REDIS_DB=$${EMBEDDED_REDIS_DB:-1} $(BIN)/python -m pytest -m "not e2e and not faults and not browser"

test-browser: install browser-deps
	EMBEDDED_REDIS_DB=$${EMBEDDED_REDIS_DB:-1} $(BIN)/python -m pytest -m browser

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/lint-imports
	$(MYPY)
	$(BIN)/vulture

stop: install
	$(BIN)/python -c "from pathlib import Path; from config import embedded; embedded.stop(Path('var'))"

clean: stop
	rm -rf var $(VENV)

bench: install
	$(BIN)/python scripts/bench.py

# Throughput side by side: intake against a bare DRF insert endpoint, both under gunicorn, driven by wrk.
bench-deps:
	@command -v wrk >/dev/null || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq wrk; }

bench-load: install bench-deps
	$(BIN)/python scripts/bench_load.py $(BENCH_ARGS)

# The whole journey on the demo's process layout: prescriptions/s to acknowledged and delivered,
# CPU per prescription (scripts/bench_e2e.py; BENCH_ARGS=--prescriptions 500 ...).
bench-e2e: install
	$(BIN)/python scripts/bench_e2e.py $(BENCH_ARGS)

# Latency and query counts at volume, on a database `manage.py bench_seed` has filled
# (scripts/bench_scale.py; e.g. DATABASE_URL=... make bench-scale BENCH_ARGS=--runs 9).
bench-scale: install
	$(BIN)/python scripts/bench_scale.py $(BENCH_ARGS)
