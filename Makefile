# Galaxy GAN Studio: `make run` starts the app, `make test` runs the test suite.
# Both set everything up first (idempotent). CONSTRAINTS pins the CPU build of torch;
# on a GPU machine install your CUDA torch into the venv first and pass CONSTRAINTS=.
PYTHON ?= python3
VENV ?= .venv
CONSTRAINTS ?= constraints/cpu.txt
PY := $(VENV)/bin/python
PIPC := $(if $(CONSTRAINTS),-c $(CONSTRAINTS),)
PORT ?= 8501

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
	$(PY) -m pytest -q

bench: setup
	$(PY) benchmarks/bench_train_step.py

clean:
	rm -rf $(VENV) .pytest_cache test-output
