# The two entry points of the README. Both set up .venv first (fast when nothing changed).
VENV ?= .venv

.PHONY: setup demo test test-all

setup:
	@bash scripts/setup.sh

demo: setup
	$(VENV)/bin/syncmv4d-demo --out out/demo

test: setup
	$(VENV)/bin/python -m pytest -q

test-all: setup
	$(VENV)/bin/python -m pytest -q -m "slow or not slow"
