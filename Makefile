# `make demo` and `make test` each set up what they need on a fresh machine (idempotent).
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: setup test demo clean

$(STAMP): setup.py constraints.txt
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --disable-pip-version-check -c constraints.txt torch==2.13.0
	$(PY) -m pip install -q --disable-pip-version-check -c constraints.txt -e '.[runtime,ros,dev]'
	touch $(STAMP)

setup: $(STAMP)

test: setup
	$(PY) -m pytest -q tests

# Until the ROS stack lands, the main job is a small end-to-end learning run on pointmaze:
# generate data with ogbench's oracle, train NF-HIQL for a few minutes, evaluate (OGBench protocol).
demo: setup
	$(VENV)/bin/nfhiql datagen pointmaze-medium-navigate --episodes 40 --seed 0 \
		-o runs/demo/pointmaze-demo.npz --force
	$(VENV)/bin/nfhiql train --config config/train/pointmaze-medium-navigate-demo.yaml --force
	$(VENV)/bin/nfhiql eval runs/demo/train/checkpoint.pt --episodes 10 --seed 0 --json runs/demo/eval.json

clean:
	rm -rf runs
