# The two commands of the README: `make demo` and `make test`. Both build .venv on first use;
# a second run finds the stamp files and goes straight to the work.
SHELL := /bin/bash
.SHELLFLAGS := -eo pipefail -c
PY := .venv/bin/python
STAMP := .venv/.installed
SAMPLES := data/samples/.fetched
PYTEST_ARGS ?=

.PHONY: demo test test-fast install samples gpu-check clean

install: $(STAMP)

$(STAMP): setup.py requirements/constraints.txt requirements/gpu-serve.txt scripts/install.sh
	./scripts/install.sh 2>&1 | { grep -v "^WARNING: Location" || true; }
	@touch $@

samples: $(SAMPLES)

$(SAMPLES): $(STAMP) scripts/fetch_samples.sh
	./scripts/fetch_samples.sh data/samples
	@touch $@

demo: $(STAMP) $(SAMPLES)
	.venv/bin/mvideo demo

# -X faulthandler: a crash after pytest's own handler is gone (interpreter shutdown) still prints
# every thread's stack.
test: $(STAMP) $(SAMPLES)
	$(PY) -X faulthandler -m pytest $(PYTEST_ARGS)

test-fast: $(STAMP) $(SAMPLES)
	$(PY) -X faulthandler -m pytest -m "not slow" $(PYTEST_ARGS)

gpu-check:
	./scripts/gpu_check.sh

clean:
	rm -rf outputs/demo
