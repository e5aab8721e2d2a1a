# Two commands set everything up on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp
export PYTHONUNBUFFERED := 1

.PHONY: install system-deps test stack-test demo airflow bench bench-store bench-ledger lock clean

install: $(STAMP)

# requirements-tracking.lock: MLflow (the `tracking` extra), which the tests run against a real server.
$(STAMP): requirements.lock requirements-tracking.lock pyproject.toml training/pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -r requirements.lock -r requirements-tracking.lock
	$(BIN)/python -m pip install -q --no-deps -e . -e ./training
	touch $(STAMP)

system-deps:
	bash scripts/system_deps.sh

test: install system-deps
	$(BIN)/python -m pytest

# The deployed path without Docker: docker-compose.yaml's services (CeleryExecutor, PostgreSQL, Redis)
# as processes.
stack-test: install system-deps
	$(BIN)/python -m pytest -m stack

demo: install
	bash scripts/demo.sh

airflow: install
	bash scripts/standalone.sh

bench: install
	$(BIN)/python -m training.bench

# The grid store's write and 28-day read times at 1 week, 6 months and 1 year of age, in a temporary
# SQLite file; BENCH_STORE_ARGS='--url postgresql+psycopg2://...' measures another database.
bench-store: install
	$(BIN)/python -m carbon_aware.grid.store_bench $(BENCH_STORE_ARGS)

# The ledger's listener on a task of about one second of work, in fresh processes, against no listener.
bench-ledger: install
	$(BIN)/python -m carbon_aware.ledger.overhead_bench

# Names in requirements-tracking.lock stay there; everything else installed goes to requirements.lock.
lock:
	sed -n '/^[^#]/s/==.*//p' requirements-tracking.lock | tr A-Z_ a-z- > .tracking-names
	{ sed -n '1,/^# Regenerate/p' requirements.lock; $(BIN)/python -m pip freeze --exclude-editable \
	  | awk -F== 'NR==FNR {t[$$1]; next} {n=tolower($$1); gsub("_", "-", n)} !(n in t)' .tracking-names - \
	  | sort -f; } > requirements.lock.new
	{ sed -n '1,/^# Regenerate/p' requirements-tracking.lock; $(BIN)/python -m pip freeze --exclude-editable \
	  | awk -F== 'NR==FNR {t[$$1]; next} {n=tolower($$1); gsub("_", "-", n)} (n in t)' .tracking-names - \
	  | sort -f; } > requirements-tracking.lock.new
	mv requirements.lock.new requirements.lock
	mv requirements-tracking.lock.new requirements-tracking.lock
	rm -f .tracking-names

clean:
	rm -rf $(VENV) output airflow_home
