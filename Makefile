# grimace-edge: one-command setup + demo, and one-command setup + tests.
# `make demo` and `make test` create .venv when missing and install with constraints.txt.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
EXTRAS ?= train,convert,eval,dev,station,station-test
STAMP  := $(VENV)/.installed

.PHONY: setup demo station-demo test test-slow lint ci clean

setup: $(STAMP)

$(STAMP): pyproject.toml constraints.txt
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --upgrade --quiet pip
	$(BIN)/python -m pip install --quiet -c constraints.txt -e '.[$(EXTRAS)]'
	@touch $(STAMP)

demo: $(STAMP)
	$(BIN)/python -m edge.demo

# the lab station on the demo model, a synthetic video as chamber c1: http://127.0.0.1:8080/
station-demo: $(STAMP)
	$(BIN)/python -m edge.station.demo

test: $(STAMP)
	YOLO_OFFLINE=1 $(BIN)/python -m pytest -m "not slow" -q

test-slow: $(STAMP)
	YOLO_OFFLINE=1 $(BIN)/python -m pytest -m slow -q

lint: $(STAMP)
	$(BIN)/ruff check .

ci: lint test

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache build *.egg-info
