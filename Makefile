# The two commands the README leads with: `make run` and `make test`.
# Each sets itself up on a fresh Debian/Ubuntu machine: system packages when missing,
# a .venv, and the pinned Python packages from constraints.txt. Re-running is fast.

PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
SYSTEM := $(VENV)/.system-checked

.PHONY: run test setup system bench clean install-service

run: setup
	@$(PY) -m streamemo dash --start-daemon -- $(ARGS)

test: setup
	@$(PY) -m pytest -q

setup: system $(STAMP)

system:
	@scripts/ensure-system-packages

# pip's chatter goes to a log, shown only when something fails.
PIPLOG := $(VENV)/pip.log
$(STAMP): pyproject.toml constraints.txt
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	@echo "installing Python packages into $(VENV) (log: $(PIPLOG))"
	@# torch first and alone: the CPU build of 2.13.0 from the local wheel store, no CUDA wheels
	@$(PY) -m pip install -c constraints.txt torch==2.13.0 > $(PIPLOG) 2>&1 || { cat $(PIPLOG); exit 1; }
	@$(PY) -m pip install -c constraints.txt -e '.[test]' >> $(PIPLOG) 2>&1 || { cat $(PIPLOG); exit 1; }
	@touch $(STAMP)

bench: setup
	@$(PY) benchmarks/latency.py

clean:
	rm -rf $(VENV) .pytest_cache .hypothesis
