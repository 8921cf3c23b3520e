# musicrec: `make run` brings both services up on the synthetic default data; `make test` runs the tests.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
MODELS_DIR ?= var/models
DATA ?=
# The index service's play log for `make run` (default: var/plays.db beside MODELS_DIR).
EVENTS ?=
PYTEST_ARGS ?=
# Test worker processes (pytest-xdist): one per core, at most 4; each test file runs whole on one
# worker (its module fixtures once). PYTEST_WORKERS=0 runs the suite in this process.
PYTEST_WORKERS ?= auto

.PHONY: run test venv proto check-protos bench bench-quick docker-smoke clean

$(STAMP): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -c constraints.txt -e '.[trainer,dev,fast]'
	touch $(STAMP)

venv: $(STAMP)

## Both services on localhost, trained on the synthetic default (or DATA=dir), answering and
## following the plays recorded in var/plays.db (or EVENTS=sqlite:///PATH | postgresql://...).
run: $(STAMP)
	$(PY) -m launcher --models-dir $(MODELS_DIR) $(if $(DATA),--data $(DATA),) $(if $(EVENTS),--events $(EVENTS),)

## The test suite (unit, service, integration and black-box grpcurl tests).
test: $(STAMP)
	PYTHON=$(PY) scripts/check_protos.sh
	$(PY) -m pytest -n $(PYTEST_WORKERS) --maxprocesses 4 --dist loadfile $(PYTEST_ARGS)

## Regenerate musicrec/v1 from protos/.
proto: $(STAMP)
	PYTHON=$(PY) scripts/gen_protos.sh

check-protos: $(STAMP)
	PYTHON=$(PY) scripts/check_protos.sh

## Benchmarks side by side with peers; writes docs/benchmarks.md and docs/benchmarks.json.
bench: $(STAMP)
	$(PY) -m pip install --quiet -c constraints.txt -e '.[bench]'
	$(PY) -m bench

bench-quick: $(STAMP)
	$(PY) -m pip install --quiet -c constraints.txt -e '.[bench]'
	$(PY) -m bench --quick

## Build and run the Docker images for real (starts a Docker engine if none runs).
docker-smoke:
	docker/smoke.sh

clean:
	rm -rf $(VENV) var .pytest_cache
