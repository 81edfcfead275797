# `make demo` and `make test` each set up what they need on a fresh machine (idempotent).
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: setup test demo clean

INTERFACES := $(wildcard nfhiql_interfaces/*.txt nfhiql_interfaces/*.xml nfhiql_interfaces/*.sh \
	nfhiql_interfaces/action/* nfhiql_interfaces/srv/*)

$(STAMP): setup.py constraints.txt $(INTERFACES)
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --disable-pip-version-check -c constraints.txt torch==2.13.0
	$(PY) -m pip install -q --disable-pip-version-check -c constraints.txt -e '.[deploy,train,bags,dev]'
	nfhiql_interfaces/install.sh $(VENV)
	touch $(STAMP)

setup: $(STAMP)

# Lint (ruff), the architecture's import contracts (import-linter), then the tests.
test: setup
	$(VENV)/bin/ruff check .
	$(VENV)/bin/lint-imports --no-cache
	$(PY) -m pytest -q tests

# The main job: the ROS 2 stack (mujoco_sim + subgoal_planner + flow_controller as separate processes
# over DDS) drives the simulated arm with the shipped cube-single-play bundle through the 5 evaluation
# tasks, then prints per-task success and the achieved planner and controller rates.
demo: setup
	$(VENV)/bin/nfhiql-bringup manipulation --json runs/demo/bringup-manipulation.json --video runs/demo/cube-episode.gif \
		--timeout 600

clean:
	rm -rf runs
