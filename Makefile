# Two commands on a fresh machine: `make run` (the bot; the console without a token) and `make test`.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
SQUAD ?= ../shared/data/squad-dev-v1.1.json.zip

.PHONY: run test install bench eval clean

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[test]'
	touch $@

install: $(VENV)/.installed

run: $(VENV)/.installed
	$(PY) -m bot

test: $(VENV)/.installed
	$(PY) -m pytest -q

bench: $(VENV)/.installed
	$(PY) benchmarks/bench_index.py

eval: $(VENV)/.installed
	$(PY) -m bot.eval squad $(SQUAD)

clean:
	rm -rf $(VENV) .pytest_cache
