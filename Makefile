# celery_sqs_ddb — every target installs what it needs into .venv first.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: test unit integration lint demo bench chaos clean

$(STAMP): setup.cfg pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e ".[test,example]"
	touch $(STAMP)

## make test: lint + the whole suite (unit, integration with moto server and real workers)
test: $(STAMP)
	$(PY) -m ruff check celery_sqs_ddb tests example_project benchmarks deploy
	$(PY) -m pytest tests

unit: $(STAMP)
	$(PY) -m pytest tests/unit

integration: $(STAMP)
	$(PY) -m pytest tests/integration

lint: $(STAMP)
	$(PY) -m ruff check celery_sqs_ddb tests example_project benchmarks deploy

## make demo: moto server + queue + table + worker + web app, submits jobs (Ctrl-C stops all)
demo: $(STAMP)
	$(PY) -m example_project.demo

## make bench: side-by-side with stock Celery (SQS + dynamodb://); writes docs/benchmarks.md
bench: $(STAMP)
	$(PY) -m benchmarks.run

clean:
	rm -rf $(VENV) test-artifacts .demo
