# Two commands set everything up on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp
export PYTHONUNBUFFERED := 1

.PHONY: install test demo bench lock clean

install: $(STAMP)

$(STAMP): requirements.lock pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -r requirements.lock
	$(BIN)/python -m pip install -q --no-deps -e .
	touch $(STAMP)

test: install
	$(BIN)/python -m pytest

demo: install
	$(BIN)/python -m training --config include/configs/test.yaml --set training.run_name=demo-$$(date -u +%Y%m%dT%H%M%S) --print-summary

bench: install
	$(BIN)/python -m training.bench

lock:
	$(BIN)/python -m pip freeze --exclude-editable | sort -f > requirements.lock.new && mv requirements.lock.new requirements.lock

clean:
	rm -rf $(VENV) output
