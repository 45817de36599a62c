# One command sets everything up and runs the demo (`make demo`), one runs the tests (`make test`).
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
DATA := data

.PHONY: setup demo test clean

setup: $(VENV)/.installed

$(VENV)/.installed: requirements.txt tools/check_system.py
	@$(PYTHON) tools/check_system.py
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements.txt
	touch $@

# Demo: 6 synthetic subjects -> Petastorm -> a 2-configuration grid for 2 epochs on local Spark.
demo: setup
	$(PY) -m chap_mop.demo_data --out $(DATA)/demo_h5 --subjects 6 --days 2 --hours 6 --seed 0
	$(PY) prep_petastorm_data.py --input $(DATA)/demo_h5 --output $(DATA)/petastorm
	$(PY) model_selection.py --data $(DATA)/petastorm --results $(DATA)/results --epochs 2 --batch-size 16 \
		--search-space '{"lr": [0.001], "l2_reg": [0.0001], "win_size": [7], "amp_factor": [1, 2]}'

test: setup
	$(PY) -m pytest -q tests

clean:
	rm -rf $(DATA) .pytest_cache
