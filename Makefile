# Galaxy GAN Studio: `make run` starts the app, `make test` runs the test suite.
# Both set everything up first (idempotent). CONSTRAINTS pins the CPU build of torch;
# on a GPU machine install your CUDA torch into the venv first and pass CONSTRAINTS=.
PYTHON ?= python3
VENV ?= .venv
CONSTRAINTS ?= constraints/cpu.txt
PY := $(VENV)/bin/python
PIPC := $(if $(CONSTRAINTS),-c $(CONSTRAINTS),)
PORT ?= 8501
# Test processes (pytest-xdist); each test file runs whole in one of them, so its module
# fixtures (the app server of the browser test, trained runs) are made once. TEST_WORKERS=0: serial.
TEST_WORKERS ?= 2

.PHONY: setup browser run test bench clean

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml $(CONSTRAINTS)
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q $(PIPC) torch
	$(PY) -m pip install -q $(PIPC) -e '.[test]'
	touch $@

# Headless Chromium from Debian for the end-to-end app test.
browser:
	@command -v chromium >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ]; then apt-get update -qq && apt-get install -y -qq chromium >/dev/null; \
	  else sudo apt-get update -qq && sudo apt-get install -y -qq chromium >/dev/null; fi; }

run: setup
	$(VENV)/bin/streamlit run app.py --server.address 127.0.0.1 --server.port $(PORT) \
	  --server.headless true --browser.gatherUsageStats false

test: setup browser
	$(PY) -m pytest -q -n $(TEST_WORKERS) --dist loadfile

bench: setup
	$(PY) benchmarks/bench_train_step.py

clean:
	rm -rf $(VENV) .pytest_cache test-output
