# One command sets everything up and runs the demo (`make demo`), one runs the tests (`make test`).
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
DATA := data

.PHONY: setup demo test test-fast bench clean cluster-start cluster-stop

setup: $(VENV)/.installed

# The package, editable, with the extras the tests need, at the versions of the lock (requirements.txt).
$(VENV)/.installed: requirements.txt pyproject.toml setup.py chap_mop/data/chap_mop_bridge.pth tools/check_system.py
	@$(PYTHON) tools/check_system.py
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -c requirements.txt -e '.[mlflow,test]'
	touch $@

# Demo: synthetic subjects -> Petastorm (some held out for testing) -> a small grid on local Spark, its
# test report and ensemble -> the ensemble's predictions; seeded end to end, settings in chap_mop/dev/demo.py
# (each demo replaces the previous demo run in data/results).
demo: setup
	$(PY) -m chap_mop.dev.demo --data $(DATA)

# Everything (what .ci/run runs), the 15 slowest tests listed just before pytest's summary line.
test: setup
	$(PY) -m pytest -q --durations=15 tests

# The quick lane: no Spark job, no training, no cluster (markers in pytest.ini), in a few minutes.
test-fast: setup
	$(PY) -m pytest -q -m "not spark and not slow and not cluster" tests

# Benchmark of every stage against its limit (about 15 min on 2 cores): bench/README.md.
bench: setup
	$(PY) -m bench.run_bench

# A Spark standalone cluster on 127.0.0.1 (a Master and 2 Workers of 1 core, 3 GB each) to try the
# spark:// path by hand: cluster-start prints the master URL to pass as --master; cluster-stop ends
# exactly the processes it started (recorded in CLUSTER_STATE).
CLUSTER_STATE := $(DATA)/spark-cluster.json

cluster-start: setup
	$(PY) -m chap_mop.dev.local_cluster start --state-file $(CLUSTER_STATE)

cluster-stop: setup
	$(PY) -m chap_mop.dev.local_cluster stop --state-file $(CLUSTER_STATE)

clean:
	rm -rf $(DATA) .pytest_cache
