# celery_sqs_ddb — every target installs what it needs into .venv first.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
# checkov pins its own dependencies, so it gets a venv of its own.
CHECKOV_VENV ?= .venv-checkov
CHECKOV_STAMP := $(CHECKOV_VENV)/.installed

.PHONY: test unit integration lint demo bench chaos conformance clean

$(STAMP): setup.cfg pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e ".[test,example]"
	touch $(STAMP)

$(CHECKOV_STAMP):
	$(PYTHON) -m venv $(CHECKOV_VENV)
	$(CHECKOV_VENV)/bin/python -m pip install --quiet --upgrade pip
	$(CHECKOV_VENV)/bin/python -m pip install --quiet "checkov>=3.2,<4"
	touch $(CHECKOV_STAMP)

## make test: lint + the whole suite (unit, integration with moto server and real workers)
test: $(STAMP) $(CHECKOV_STAMP)
	@# The browser test needs Debian's chromium: installed here when root (as .ci/run does), else one line says how.
	@command -v chromium >/dev/null 2>&1 || command -v chromium-browser >/dev/null 2>&1 || \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    echo "installing chromium for the browser test (apt-get)"; \
	    DEBIAN_FRONTEND=noninteractive apt-get update -qq && \
	    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium; \
	  else echo "make test: the browser test needs chromium; install it with: sudo apt-get install chromium" >&2; exit 1; fi
	$(PY) -m ruff check celery_sqs_ddb tests example_project benchmarks deploy
	$(PY) -m mypy
	CHECKOV=$(CURDIR)/$(CHECKOV_VENV)/bin/checkov $(PY) -m pytest tests

unit: $(STAMP) $(CHECKOV_STAMP)
	CHECKOV=$(CURDIR)/$(CHECKOV_VENV)/bin/checkov $(PY) -m pytest tests/unit

integration: $(STAMP)
	$(PY) -m pytest tests/integration

lint: $(STAMP)
	$(PY) -m ruff check celery_sqs_ddb tests example_project benchmarks deploy
	$(PY) -m mypy

## make demo: moto server + queue + table + worker + web app, submits jobs (Ctrl-C stops all)
demo: $(STAMP)
	$(PY) -m example_project.demo

## make chaos: the chaos suite at full size (300 tasks per scenario), then its report table
chaos: $(STAMP)
	rm -f test-artifacts/chaos.json
	CHAOS_TASKS=300 $(PY) -m pytest tests/chaos
	$(PY) -m tests.chaos.report

## make bench: side-by-side with stock Celery (SQS + dynamodb://); writes docs/benchmarks.md
bench: $(STAMP)
	$(PY) -m pip install --quiet -e ".[test,example,bench]"
	$(PY) -m benchmarks.run

## make conformance: celery's own t/integration (sdist of the installed celery) on SQS + ddb:// (moto);
## writes docs/conformance.md. Not part of make test.
conformance: $(STAMP)
	$(PY) -m pip install --quiet -e ".[test,example,conformance]"
	$(PY) -m tests.conformance.run

clean:
	rm -rf $(VENV) $(CHECKOV_VENV) test-artifacts .demo
