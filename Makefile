# Every target creates .venv and installs what it needs; nothing else is needed on a fresh machine.
SHELL := /bin/bash
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# durable-rules does not import on Python 3.13: take 3.11 or 3.12.
PYTHON ?= $(shell for p in python3.11 python3.12 python3; do \
	command -v $$p >/dev/null && $$p -c 'import sys; sys.exit(not (3,11) <= sys.version_info[:2] < (3,13))' && { echo $$p; break; }; done)

.PHONY: demo test bench mutation lint clean help

help:
	@echo "make demo   - run the nightly cycle end to end on the embedded default (SQLite, loopback SFTP)"
	@echo "make test   - run the test suite"
	@echo "make bench  - run the performance benchmarks and print their figures"
	@echo "make mutation - mutation testing of the checking modules (tools/mutate.py; not part of make test)"

$(STAMP): setup.cfg pyproject.toml
	@test -n "$(PYTHON)" || { echo "error: Python 3.11 or 3.12 is needed (durable-rules does not import on 3.13)"; exit 1; }
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[test]'
	touch $@

demo: $(STAMP)
	$(BIN)/python -m reskontro.demo

test: $(STAMP)
	$(BIN)/lint-imports
	$(BIN)/python -m pytest -q

bench: $(STAMP)
	@failed=""; for b in benchmarks/bench_*.py; do echo "== $$b"; $(BIN)/python $$b || failed="$$failed $$b"; done; \
	if [ -n "$$failed" ]; then echo "targets not met:$$failed"; exit 1; fi

# One change at a time to each checking module, that module's tests run (tools/mutate.py);
# per-module figures; fails below 90 % killed or on a survivor docs/mutation-survivors.md
# does not explain. MODULES="kid amount" runs some only.
mutation: $(STAMP)
	$(BIN)/python tools/mutate.py $(MODULES)

clean:
	rm -rf $(VENV) build *.egg-info
