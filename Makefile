# The two commands the README leads with: `make run` and `make test`.
# Each sets itself up on a fresh Debian/Ubuntu machine: system packages when missing,
# a .venv, and the pinned Python packages from constraints.txt. Re-running is fast.

PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: run test setup system bench clean install-service install-user-service

run: setup
	@$(PY) -m streamemo dash --start-daemon -- $(ARGS)

test: setup
	@scripts/ensure-system-packages --test $(PYTHON)
	@$(PY) -m pytest -q

setup: system $(STAMP)

system:
	@scripts/ensure-system-packages $(PYTHON)

# pip's chatter goes to a log, shown only when something fails.
PIPLOG := $(VENV)/pip.log
$(STAMP): pyproject.toml constraints.txt
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	@echo "installing Python packages into $(VENV) (log: $(PIPLOG))"
	@# torch first and alone: the CPU build of 2.13.0 from the local wheel store, no CUDA wheels.
	@# [test] brings [train] (the trainer, plots, augmentation) too: make run and make test share one venv.
	@$(PY) -m pip install -c constraints.txt torch==2.13.0 > $(PIPLOG) 2>&1 || { cat $(PIPLOG); exit 1; }
	@$(PY) -m pip install -c constraints.txt -e '.[test]' >> $(PIPLOG) 2>&1 || { cat $(PIPLOG); exit 1; }
	@touch $(STAMP)

bench: setup
	@$(PY) benchmarks/latency.py

# --- running as a service (systemd/README.md) ------------------------------------------------
# System unit: the software in its own venv under PREFIX, the unit, /etc/streamemo. As root.
PREFIX  ?= /opt/streamemo
UNITDIR ?= /etc/systemd/system
CONFDIR ?= /etc/streamemo
MODEL   ?= models/default
# The service's interpreter must live outside /home and /root: the unit hides them (ProtectHome).
SERVICE_PYTHON ?= $(shell command -v /usr/bin/python3.11 || command -v /usr/bin/python3)
install-service:
	@test "$$(id -u)" = 0 || { echo "install-service writes to $(PREFIX), $(UNITDIR) and $(CONFDIR): run it with sudo"; exit 1; }
	@case "$$(readlink -f '$(SERVICE_PYTHON)')" in ""|/home/*|/root/*) \
	  echo "SERVICE_PYTHON=$(SERVICE_PYTHON) is missing or under a home directory; set SERVICE_PYTHON=/usr/bin/python3.11"; exit 1;; esac
	@test -f $(MODEL).safetensors -a -f $(MODEL).json || { echo "$(MODEL).safetensors/.json missing: train a model or set MODEL=path/name"; exit 1; }
	install -d -m 0755 $(PREFIX) $(PREFIX)/models
	test -x $(PREFIX)/venv/bin/python || $(SERVICE_PYTHON) -m venv $(PREFIX)/venv
	$(PREFIX)/venv/bin/python -m pip install -q -c constraints.txt torch==2.13.0
	$(PREFIX)/venv/bin/python -m pip install -q -c constraints.txt .
	install -m 0644 $(MODEL).safetensors $(PREFIX)/models/default.safetensors
	install -m 0644 $(MODEL).json $(PREFIX)/models/default.json
	install -d -m 0755 $(UNITDIR) $(CONFDIR) $(CONFDIR)/clients
	sed 's#/opt/streamemo#$(PREFIX)#g' systemd/streamemo.service > $(UNITDIR)/streamemo.service
	sed 's#/opt/streamemo#$(PREFIX)#g' systemd/streamemo-mqtt.service > $(UNITDIR)/streamemo-mqtt.service
	sed 's#/opt/streamemo#$(PREFIX)#g' systemd/streamemo-watch.service > $(UNITDIR)/streamemo-watch.service
	test -e $(CONFDIR)/streamemo.toml || sed 's#/opt/streamemo#$(PREFIX)#g' systemd/streamemo.toml > $(CONFDIR)/streamemo.toml
	@if test -d /run/systemd/system; then systemctl daemon-reload; fi
	@echo "installed. Edit $(CONFDIR)/streamemo.toml (audio.source), then: sudo systemctl enable --now streamemo"

# User unit: runs this checkout's .venv in your session, next to PipeWire/PulseAudio. No root.
USER_UNITDIR ?= $(HOME)/.config/systemd/user
USER_CONFDIR ?= $(HOME)/.config/streamemo
install-user-service: setup
	install -d $(USER_UNITDIR) $(USER_CONFDIR)
	sed 's#/opt/streamemo/venv/bin/streamemo#$(CURDIR)/$(VENV)/bin/streamemo#' systemd/streamemo.user.service > $(USER_UNITDIR)/streamemo.service
	test -e $(USER_CONFDIR)/streamemo.toml || sed 's#^path = "default"#path = "$(abspath $(MODEL))"#' systemd/streamemo.user.toml > $(USER_CONFDIR)/streamemo.toml
	@systemctl --user daemon-reload 2>/dev/null || echo "(no user systemd here: run 'systemctl --user daemon-reload' in your session)"
	@echo "installed. Its config: $(USER_CONFDIR)/streamemo.toml. Start it with: systemctl --user enable --now streamemo"

clean:
	rm -rf $(VENV) .pytest_cache .hypothesis
