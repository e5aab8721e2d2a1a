# Two commands set everything up on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp
export PYTHONUNBUFFERED := 1

.PHONY: install system-deps test stack-test demo airflow bench lock clean

install: $(STAMP)

$(STAMP): requirements.lock pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -r requirements.lock
	$(BIN)/python -m pip install -q --no-deps -e .
	touch $(STAMP)

system-deps:
	bash scripts/system_deps.sh

test: install system-deps
	$(BIN)/python -m pytest

# The deployed path without Docker: docker-compose.yaml's services (CeleryExecutor, PostgreSQL, Redis) as processes.
stack-test: install system-deps
	$(BIN)/python -m pytest -m stack

demo: install
	bash scripts/demo.sh

airflow: install
	bash scripts/standalone.sh

bench: install
	$(BIN)/python -m training.bench

lock:
	{ sed -n '1,/^# Regenerate/p' requirements.lock; $(BIN)/python -m pip freeze --exclude-editable | sort -f; } > requirements.lock.new
	mv requirements.lock.new requirements.lock

clean:
	rm -rf $(VENV) output airflow_home
