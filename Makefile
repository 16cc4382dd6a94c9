PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: install demo test bench clean

$(STAMP): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -c constraints.txt -e ".[dev,bench]"
	touch $(STAMP)

install: $(STAMP)

# Trains on the embedded data and backbone, evaluates, writes a report.
demo: install
	$(PY) -m rewardlab demo --out runs/demo

test: install
	@command -v chromium >/dev/null && command -v chromedriver >/dev/null || \
	  (apt-get update -qq && apt-get install -y -qq chromium chromium-driver >/dev/null) || \
	  echo "chromium could not be installed: the report-rendering test will skip"
	$(PY) -m pytest -q -p no:cacheprovider

bench: install
	$(PY) bench/compare_trl.py

clean:
	rm -rf $(VENV) runs
