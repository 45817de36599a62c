"""Benchmark: how close each stage gets to its limit, measured side by side on one machine.

Builds its own demo data, then measures four stages and writes ``bench/results.json`` and a
markdown table (stdout):

1. prep throughput: ``prep_petastorm_data.py`` on local Spark against a single-process pyarrow writer;
2. input pipeline headroom: one worker's Petastorm reader + ``transformation_fn`` against a training step;
3. model hopper efficiency: ``model_selection.py`` (cerebro's 2 s polling and the project's setting)
   against the ideal of training each configuration alone, divided by the number of workers;
4. accuracy parity: final validation balanced accuracy of each configuration, hopped against alone;
5. successive halving: the same configurations searched with ``--search grid`` and ``--search sha``.

Run from the project folder (``make bench`` does the same with the defaults)::

    .venv/bin/python -m bench.run_bench [--subjects N --days N --hours H ...]

Everything it writes besides ``bench/results.json`` goes to ``bench/work/`` (logs of every command
included), which each run replaces.
"""
import argparse
import csv
import datetime
import importlib.metadata
import json
import os
import platform
import re
import shutil
import statistics
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import pyarrow.fs as pafs
import pyarrow.parquet as pq

from chap_mop.runtime import runtime_env

# The bench's own arithmetic uses chap_mop.data.windows, which imports TensorFlow: quietly, with Keras 2.
runtime_env.import_tensorflow()

from chap_mop.selection import halving  # noqa: E402
from chap_mop.data import prep  # noqa: E402
from chap_mop.selection.epoch_schedule import DEFAULT_POLLING_PERIOD_S  # noqa: E402
from chap_mop.dev.demo_data import write_demo_dataset  # noqa: E402
from chap_mop.data.h5_format import read_day_file  # noqa: E402
from chap_mop.data.schema import MANIFEST_NAME, TRAIN_DIR, VAL_DIR, WINDOW_ARROW_SCHEMA, window_table  # noqa: E402
from chap_mop.data.windows import sequence_length  # noqa: E402

PROJECT = Path(__file__).resolve().parents[1]
WORK = PROJECT / "bench" / "work"
RESULTS = PROJECT / "bench" / "results.json"

TRAIN_FRACTION, SPLIT_SEED = 0.7, 2021  # prep_petastorm_data.py's defaults, given explicitly to both writers
STOCK_POLLING_PERIOD_S = 2.0  # cerebro-dl's own polling period
# lr 1e-4: at 1e-3 the few steps of the default data swing models between one-class output and
# learning, which would make the accuracy comparison of stage 4 a coin toss.
DEFAULT_GRID = {"lr": [1e-4], "l2_reg": [1e-3, 1e-4], "win_size": [7], "amp_factor": [1, 2]}
# Stage 5: configurations that really differ (lr over 3 orders of magnitude, two widths), on small data.
HALVING_GRID = {"lr": [1e-2, 1e-3, 1e-4, 1e-5], "l2_reg": [1e-4], "win_size": [1], "amp_factor": [1, 2]}
DEFAULT_MODEL = {"win_size": 7, "amp_factor": 2, "l2_reg": 1e-4, "lr": 1e-4}  # the training step of stage 2
SEARCH_BATCH_SIZE = 128  # model_selection.py's default sequences per step

PREP_LINE = re.compile(r"wrote \d+ subjects, (\d+) windows to \S+ in ([\d.]+) s")
CEREBRO_EPOCH = re.compile(r"Starting EPOCH (Training|Validation)")
CEREBRO_SCHEDULING = re.compile(r"Scheduling Model: ([^,\s]+), on Worker: (\d+)")
CEREBRO_COMPLETED = re.compile(r"Completed Model: ([^,\s]+), on Worker: (\d+)")
CEREBRO_SUB_EPOCH = re.compile(r"Model: ([^,\s]+), Mode: (TRAIN|VALID), Initialization Time: ([-\d.e]+), "
                               r"Training Time: ([-\d.e]+), Finalization Time: ([-\d.e]+)")


class BenchError(RuntimeError):
    """A step of the benchmark failed or gave inconsistent results; the message says where to look."""


@dataclass(frozen=True)
class Line:
    """One output line of a command, with the seconds since the command started when it arrived."""
    seconds: float
    text: str


def run_command(args: list[str], log: Path) -> tuple[float, list[Line]]:
    """Run a command from the project folder, keeping every output line with its arrival time.

    Python output is unbuffered (``PYTHONUNBUFFERED``) so that arrival times are the times lines
    were printed, to well under a second; cerebro's own timestamps have whole seconds only.

    :return: wall-clock seconds of the whole command, its stdout and stderr lines in arrival order.
    :raises BenchError: the command failed; the log file holds all of its output.
    """
    started = time.perf_counter()
    process = subprocess.Popen(args, cwd=PROJECT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               env={**os.environ, "PYTHONUNBUFFERED": "1"})
    lines: list[Line] = []

    def collect(stream) -> None:
        for text in stream:
            lines.append(Line(time.perf_counter() - started, text.rstrip("\n")))

    readers = [threading.Thread(target=collect, args=(stream,)) for stream in (process.stdout, process.stderr)]
    for reader in readers:
        reader.start()
    returncode = process.wait()
    for reader in readers:
        reader.join()
    wall_s = time.perf_counter() - started
    lines.sort(key=lambda line: line.seconds)
    log.write_text("".join(f"{line.seconds:9.3f} {line.text}\n" for line in lines))
    if returncode != 0:
        tail = "\n".join(line.text for line in lines[-15:])
        raise BenchError(f"{' '.join(args[:3])} ... failed ({returncode}); full output in {log}:\n{tail}")
    return wall_s, lines


def single_worker(command: str, name: str, **options) -> dict:
    """Run one ``bench/single_worker.py`` measurement in a fresh process and return its JSON result."""
    out = WORK / f"{name}.json"
    args = [sys.executable, "-m", "bench.single_worker", command, "--out", str(out)]
    for option, value in options.items():
        args += [f"--{option.replace('_', '-')}", value if isinstance(value, str) else json.dumps(value)]
    run_command(args, WORK / f"{name}.log")
    return json.loads(out.read_text())


def machine() -> dict:
    """CPU, cores, RAM and software versions of this machine, and the date."""
    cpuinfo = Path("/proc/cpuinfo").read_text()
    meminfo = Path("/proc/meminfo").read_text()
    cpu = re.search(r"^model name\s*:\s*(.+)$", cpuinfo, re.M)
    ram_kb = int(re.search(r"^MemTotal:\s*(\d+) kB", meminfo, re.M).group(1))
    return {"cpu": cpu.group(1) if cpu else platform.processor(), "cores": os.cpu_count(),
            "ram_gb": round(ram_kb / 2 ** 20, 1), "os": platform.platform(), "python": platform.python_version(),
            **{package: importlib.metadata.version(package)
               for package in ("tensorflow", "tf-keras", "pyspark", "petastorm", "pyarrow", "cerebro-dl")},
            "date": datetime.datetime.now().astimezone().isoformat(timespec="seconds")}


def load_average() -> float:
    """The machine's 1-minute load average (runnable processes, all cores together)."""
    return os.getloadavg()[0]


def make_data(out: Path, subjects: int, days: int, hours: float, seed: int) -> dict:
    """Write the demo H5 day files the benchmark reads; returns their size."""
    write_demo_dataset(out, subjects, days, hours, seed)
    files = list(out.rglob("*.h5"))
    return {"subjects": subjects, "days": days, "hours_per_day": hours, "seed": seed, "day_files": len(files),
            "h5_mb": round(sum(f.stat().st_size for f in files) / 2 ** 20, 1)}


# Stage 1 ----------------------------------------------------------------------------------------------

def prep_with_spark(h5_dir: Path, store: Path, partitions: int, log: str = "prep_spark") -> dict:
    """Run ``prep_petastorm_data.py`` on local Spark with every core.

    :return: windows written, wall-clock s of the command (Spark start-up included) and the job's
        own s (from its closing line: checks, writes and manifest, no start-up).
    """
    wall_s, lines = run_command([sys.executable, "prep_petastorm_data.py", "--master", "local[*]",
                                 "--input", str(h5_dir), "--output", str(store), "--partitions", str(partitions),
                                 "--train-fraction", str(TRAIN_FRACTION), "--seed", str(SPLIT_SEED)],
                                WORK / f"{log}.log")
    found = [m for m in map(PREP_LINE.search, (line.text for line in lines)) if m]
    if not found:
        raise BenchError(f"prep_petastorm_data.py printed no 'wrote ... windows ... in ... s' line; see "
                         f"{WORK / f'{log}.log'}")
    return {"windows": int(found[-1].group(1)), "wall_s": wall_s, "job_s": float(found[-1].group(2))}


def prep_baseline(h5_dir: Path, out: Path, partitions: int) -> tuple[float, float]:
    """The same conversion in one process with pyarrow alone: same passes, split, files and rows.

    Pass 1 counts rows (without reading ``data``) to plan the files, as the Spark job does;
    pass 2 reads every day file whole and writes one row group per day file, with the same
    columns and Parquet settings as prep's executors.

    :return: seconds of both passes together, and of those the seconds spent reading day files whole.
    """
    shutil.rmtree(out, ignore_errors=True)
    started = time.perf_counter()
    fs = pafs.LocalFileSystem()
    day_files, _ = prep.find_day_files(fs, str(h5_dir))
    rows = {subject: sum(prep.inspect_day_file(fs, subject, path)[2] for path in paths)
            for subject, paths in day_files.items()}
    train, val, _ = prep.split_subjects(list(day_files), TRAIN_FRACTION, SPLIT_SEED)
    read_s = 0.0
    for name, subjects in (("train", train), ("validation", val)):
        plan = prep.plan_split(name, name, subjects, rows, partitions)
        (out / plan.folder).mkdir(parents=True)
        for index, file_subjects in enumerate(plan.files):
            with pq.ParquetWriter(out / plan.folder / f"part-{index:05d}.parquet", WINDOW_ARROW_SCHEMA,
                                  use_dictionary=["id"]) as writer:
                for subject in file_subjects:
                    for path in day_files[subject]:
                        read_started = time.perf_counter()
                        day = read_day_file(path)
                        read_s += time.perf_counter() - read_started
                        writer.write_table(window_table(subject, day))
    return time.perf_counter() - started, read_s


def check_same_rows(spark_dir: Path, baseline_dir: Path) -> None:
    """Both writers wrote the same rows, byte for byte, in both splits (order aside).

    :raises BenchError: a split differs.
    """
    for spark_split, baseline_split in ((TRAIN_DIR, "train"), (VAL_DIR, "validation")):
        tables = [pq.read_table(path).sort_by([("id", "ascending"), ("time", "ascending")])
                  for path in (spark_dir / spark_split, baseline_dir / baseline_split)]
        for name in WINDOW_ARROW_SCHEMA.names:
            if not tables[0].column(name).equals(tables[1].column(name)):
                raise BenchError(f"column '{name}' of {spark_split} differs between Spark's and the baseline's rows")


FIRST_JOB = """
import time
from chap_mop.runtime.spark_session import start_spark
sc = start_spark("local[*]", "first job").sparkContext
started = time.perf_counter()
sc.parallelize(range(8), 8).map(lambda x: x).collect()
print(f"first job {time.perf_counter() - started:.3f} s")
"""


def spark_first_job_s() -> float:
    """Seconds of a trivial first job in a new Spark session: the start of its Python workers, which
    the first job of every Spark application pays (prep's pass 1 included)."""
    _, lines = run_command([sys.executable, "-c", FIRST_JOB], WORK / "spark_first_job.log")
    return float(next(m for m in map(re.compile(r"first job ([\d.]+) s").search, (line.text for line in lines)) if m).group(1))


def stage_prep(h5_dir: Path, store: Path, partitions: int) -> dict:
    """Stage 1: windows per second of the Spark job and of the single-process baseline, and their ratio."""
    spark = prep_with_spark(h5_dir, store, partitions)
    baseline_s, baseline_read_s = prep_baseline(h5_dir, WORK / "prep_baseline", partitions)
    check_same_rows(store, WORK / "prep_baseline")
    windows = spark["windows"]
    rates = {"spark_wall_windows_per_s": windows / spark["wall_s"], "spark_job_windows_per_s": windows / spark["job_s"],
             "baseline_windows_per_s": windows / baseline_s}
    return {"windows": windows, "spark_wall_s": spark["wall_s"], "spark_job_s": spark["job_s"],
            "baseline_s": baseline_s, "baseline_read_s": baseline_read_s, "cores": os.cpu_count(),
            "spark_first_job_s": spark_first_job_s(), **rates,
            "spark_wall_over_baseline": rates["spark_wall_windows_per_s"] / rates["baseline_windows_per_s"],
            "spark_job_over_baseline": rates["spark_job_windows_per_s"] / rates["baseline_windows_per_s"]}


# Stage 2 ----------------------------------------------------------------------------------------------

def stage_input_pipeline(store: Path, workers: int, batch_size: int, steps: int) -> dict:
    """Stage 2: windows/s of one worker's reader + windowing alone against a training step of the
    default model, both with one core; headroom = pipeline rate / training rate."""
    pipeline = single_worker("input-pipeline", "pipeline", store=str(store), win_size=DEFAULT_MODEL["win_size"],
                             batch_size=batch_size, shard=0, shards=workers)
    step = single_worker("train-step", "train_step", batch_size=batch_size, steps=steps, **DEFAULT_MODEL)
    return {"pipeline": pipeline, "train_step": step,
            "cold_headroom": pipeline["cold_windows_per_s"] / step["windows_per_s"],
            "warm_headroom": pipeline["warm_windows_per_s"] / step["windows_per_s"]}


# Stage 3 ----------------------------------------------------------------------------------------------

def config_key(config: dict) -> str:
    """A configuration's identity across model_selection.py's models.csv and the one-by-one runs."""
    return (f"lr={float(config['lr']):g} l2_reg={float(config['l2_reg']):g} win_size={int(config['win_size'])} "
            f"amp_factor={int(config['amp_factor'])}")


def run_model_selection(store: Path, grid: dict, workers: int, epochs: int, batch_size: int, seed: int,
                        polling_period: float) -> dict:
    """Run ``model_selection.py --seed`` once (each configuration's initial weights and every shuffle from
    ``seed``); return its wall-clock, time split, and final accuracies."""
    name = f"model_selection_poll{polling_period:g}"
    results = WORK / name
    wall_s, lines = run_command([sys.executable, "model_selection.py", "--seed", str(seed),
                                 "--data", str(store), "--results", str(results), "--workers", str(workers),
                                 "--epochs", str(epochs), "--batch-size", str(batch_size),
                                 "--search-space", json.dumps(grid), "--polling-period", str(polling_period),
                                 "--verbose"],  # cerebro's own lines are what time_split reads
                                WORK / f"{name}.log")
    split = time_split(lines, wall_s, workers)
    expected = len(halving.grid(grid)) * workers * epochs * 2  # a train and a validation visit per worker
    if split["sub_epochs"] != expected:
        raise BenchError(f"{name}: {split['sub_epochs']} sub-epoch timing lines, expected {expected}; "
                         f"see {WORK / name}.log")
    with open(results / "models.csv", newline="") as handle:
        accuracy = {config_key(row): float(row["val_balanced_accuracy"]) for row in csv.DictReader(handle)}
    summary = json.loads((results / "summary.json").read_text())
    return {"polling_period_s": polling_period, "wall_s": wall_s, **split,
            "sequences_per_epoch": summary["sequences_per_epoch"], "val_balanced_accuracy": accuracy}


def time_split(lines: list[Line], wall_s: float, workers: int) -> dict:
    """Where model_selection.py's wall-clock went, from the driver's and the workers' lines.

    A phase is one epoch's training or validation, from its first "Scheduling" to its last
    "Completed" line. Inside phases a worker is either holding a model (from the driver's
    "Scheduling" to its "Completed" line) or waiting for one: every model it still has to see is
    on another worker, or the phase waits for its slowest sub-epoch. While holding a model, a worker
    runs the sub-epoch (cerebro times its initialization, training and finalization) or waits for
    the call to arrive and for the driver's next poll to notice the sub-epoch ended.

    :return: seconds; ``*_worker_s`` are worker-seconds summed over workers. ``startup_s`` (start to
        first scheduling: Spark, data store checks, workers, readers), ``between_phases_s`` (driver
        work between phases), ``wrapup_s``, ``train_worker_s`` and ``validate_worker_s`` (Keras
        fit/evaluate, data reading inside), ``init_worker_s`` (checkpoint load + tf.data build),
        ``finalize_worker_s`` (checkpoint save + sync + session clear), ``polling_worker_s`` (holding a
        model outside its sub-epoch), ``waiting_worker_s`` (holding no model inside a phase),
        ``phases_s`` (the phases' lengths summed) and ``busiest_worker_s`` (per phase, the longest any
        one worker held models, summed: no schedule of these visits can take less, whatever the order).
    """
    phases: list[list[float]] = []  # [first scheduling, last completion] per phase
    scheduled_at: dict[str, float] = {}  # worker -> when the driver scheduled its current model
    held_per_phase: list[dict[str, float]] = []  # worker -> seconds it held models, per phase
    sums = {"TRAIN": [0.0, 0.0, 0.0], "VALID": [0.0, 0.0, 0.0]}  # initialization, training, finalization
    sub_epochs = 0
    for line in lines:
        if CEREBRO_EPOCH.search(line.text):
            phases.append([])
            held_per_phase.append({})
        elif match := CEREBRO_SCHEDULING.search(line.text):
            scheduled_at[match.group(2)] = line.seconds
            phases[-1] = phases[-1] or [line.seconds, line.seconds]
        elif match := CEREBRO_COMPLETED.search(line.text):
            held = line.seconds - scheduled_at.pop(match.group(2))
            held_per_phase[-1][match.group(2)] = held_per_phase[-1].get(match.group(2), 0.0) + held
            phases[-1][1] = line.seconds
        for match in CEREBRO_SUB_EPOCH.finditer(line.text):  # workers' lines may have joined another
            sub_epochs += 1
            for i, value in enumerate(match.groups()[2:]):
                sums[match.group(2)][i] += float(value)
    if not phases or not all(phases):
        raise BenchError("model_selection.py printed no cerebro scheduling lines")
    held_s = sum(sum(held.values()) for held in held_per_phase)
    phase_worker_s = workers * sum(end - start for start, end in phases)
    busy = sum(sum(values) for values in sums.values())
    return {"startup_s": phases[0][0], "wrapup_s": wall_s - phases[-1][1],
            "between_phases_s": sum(nxt[0] - prev[1] for prev, nxt in zip(phases, phases[1:])),
            "phases": len(phases), "sub_epochs": sub_epochs, "phase_worker_s": phase_worker_s,
            "phases_s": phase_worker_s / workers,
            "busiest_worker_s": sum(max(held.values(), default=0.0) for held in held_per_phase),
            "train_worker_s": sums["TRAIN"][1], "validate_worker_s": sums["VALID"][1],
            "init_worker_s": sums["TRAIN"][0] + sums["VALID"][0],
            "finalize_worker_s": sums["TRAIN"][2] + sums["VALID"][2],
            "polling_worker_s": held_s - busy, "waiting_worker_s": phase_worker_s - held_s}


def machine_scaling(workers: int, batch_size: int, steps: int) -> dict:
    """Training-step rate of ``workers`` one-thread processes at once against one process alone.

    The ideal of stage 3 assumes that ``workers`` cores train ``workers`` times as fast as one; cores
    that share caches, memory bandwidth or a physical core (in a VM) do not. 1.0 means they do.
    """
    alone = single_worker("train-step", "scaling_alone", batch_size=batch_size, steps=steps, **DEFAULT_MODEL)
    with ThreadPoolExecutor(workers) as pool:
        together = list(pool.map(lambda i: single_worker("train-step", f"scaling_together{i}", batch_size=batch_size,
                                                         steps=steps, **DEFAULT_MODEL), range(workers)))
    rates = [run["windows_per_s"] for run in together]
    return {"batch_size": batch_size, "steps": steps, "alone_windows_per_s": alone["windows_per_s"],
            "together_windows_per_s": rates, "each_over_alone": statistics.mean(rates) / alone["windows_per_s"]}


def retracing_estimate(alone_runs: list[dict], workers: int) -> float:
    """Worker-seconds that hopping spends tracing Keras functions, estimated from the runs alone.

    Alone, a configuration traces its train and predict functions once, in its first epoch; hopped,
    each worker builds and traces a configuration's model once and keeps it (chap_mop.selection.model_cache).
    One trace costs about the first epoch's time less the second's (the same work without tracing).
    """
    return sum(workers * max(0.0, run["fit_s"][0] - run["fit_s"][1] + run["val_s"][0] - run["val_s"][1])
               for run in alone_runs)


def trained_windows(configs: list[dict], epochs: int, sequences: dict) -> int:
    """Windows that training passes through over all configurations and epochs.

    :param sequences: ``{str(win_size): {"train": sequences per epoch, ...}}``.
    """
    return sum(epochs * sequences[str(c["win_size"])]["train"] * sequence_length(c["win_size"]) for c in configs)


def stage_model_hopper(store: Path, grid: dict, workers: int, epochs: int, batch_size: int, seed: int,
                       steps: int, pipeline_rows_per_s: float) -> dict:
    """Stage 3: model_selection.py with cerebro's stock and the project's polling, against the ideal.

    Ideal: the summed seconds of training (and validating every epoch) each configuration alone on
    one core, with all sequences in memory, divided by the number of workers.

    :param steps: timed steps of each process in :func:`machine_scaling`.
    :param pipeline_rows_per_s: stage 2's warm reader rate, to estimate the time spent reading.
    """
    configs = halving.grid(grid)
    scaling = machine_scaling(workers, batch_size, steps)
    alone = single_worker("one-by-one", "one_by_one", store=str(store), configs=configs, epochs=epochs,
                          batch_size=batch_size, seed=seed)
    ideal_s = sum(sum(run["fit_s"]) + sum(run["val_s"]) for run in alone["runs"]) / workers
    manifest = json.loads((store / MANIFEST_NAME).read_text())
    rows_read = len(configs) * epochs * sum(split["rows"] for split in manifest["splits"].values())
    runs = []
    for polling_period in (STOCK_POLLING_PERIOD_S, DEFAULT_POLLING_PERIOD_S):
        run = run_model_selection(store, grid, workers, epochs, batch_size, seed, polling_period)
        run.update({"ideal_over_actual": ideal_s / run["wall_s"],
                    "machine_best_over_actual": ideal_s / scaling["each_over_alone"] / run["wall_s"],
                    "ideal_over_phases": ideal_s / (run["phase_worker_s"] / workers),
                    "hopped_train_windows_per_worker_s": (trained_windows(configs, epochs, run["sequences_per_epoch"])
                                                          / run["train_worker_s"])})
        runs.append(run)
    return {"configs": configs, "workers": workers, "epochs": epochs, "batch_size": batch_size,
            "machine_scaling": scaling, "one_by_one": alone, "ideal_s": ideal_s,
            "alone_train_windows_per_s": (trained_windows(configs, epochs, alone["sequences"])
                                          / sum(sum(run["fit_s"]) for run in alone["runs"])),
            "reading_estimate_worker_s": rows_read / pipeline_rows_per_s,
            "retracing_estimate_worker_s": retracing_estimate(alone["runs"], workers), "runs": runs}


# Stage 4 ----------------------------------------------------------------------------------------------

def stage_accuracy_parity(hopper: dict) -> dict:
    """Stage 4: final validation balanced accuracy, hopped (each stage 3 run) against alone, per configuration.

    Every run starts each configuration from the same weights. The two hopped runs differ only in
    polling period, which changes nothing that is computed, only which worker frees up first and so
    the order in which a model visits the partitions: how far apart they end up is the noise floor
    of the hopped-against-alone difference.
    """
    configs = []
    for alone in hopper["one_by_one"]["runs"]:
        final = alone["val_balanced_accuracy"][-1]
        hopped = [run["val_balanced_accuracy"][config_key(alone)] for run in hopper["runs"]]
        configs.append({"config": config_key(alone), "alone": final,
                        "hopped": {f"polling {run['polling_period_s']:g} s": value
                                   for run, value in zip(hopper["runs"], hopped)},
                        "largest_difference": max(abs(value - final) for value in hopped),
                        "hopped_spread": max(hopped) - min(hopped)})
    return {"configs": configs, "largest_difference": max(c["largest_difference"] for c in configs),
            "hopped_spread": max(c["hopped_spread"] for c in configs),
            "alone_last_epoch_change": last_epoch_change(hopper["one_by_one"]["runs"])}


def last_epoch_change(alone_runs: list[dict]) -> float:
    """The largest change of a configuration's validation balanced accuracy over its last epoch, alone.

    A curve still moving by this much has not settled: a hopped-vs-alone difference below it is not
    a measurement of hopping.
    """
    return max(abs(run["val_balanced_accuracy"][-1] - run["val_balanced_accuracy"][-2]) for run in alone_runs)


# Stage 5 ----------------------------------------------------------------------------------------------

def stage_halving(store: Path, grid: dict, workers: int, epochs: int, eta: int, batch_size: int, seed: int) -> dict:
    """Stage 5: ``model_selection.py --search grid`` against ``--search sha`` on the same configurations,
    data, epochs and initial weights (seeded as in stage 3): wall-clock, configuration-epochs trained,
    and the best configuration with its validation balanced accuracy under each."""
    runs = {}
    for search in ("grid", "sha"):
        name = f"halving_{search}"
        results = WORK / name
        extra = ["--eta", str(eta)] if search == "sha" else []
        wall_s, _ = run_command([sys.executable, "model_selection.py", "--seed", str(seed), "--data", str(store),
                                 "--results", str(results), "--workers", str(workers), "--epochs", str(epochs),
                                 "--batch-size", str(batch_size), "--search-space", json.dumps(grid),
                                 "--search", search, "--ensemble-size", "1", *extra], WORK / f"{name}.log")
        summary = json.loads((results / "summary.json").read_text())
        with open(results / "models.csv", newline="") as handle:
            models = list(csv.DictReader(handle))
        runs[search] = {"wall_s": wall_s, "configuration_epochs": sum(int(model["epochs"]) for model in models),
                        "best": config_key(summary["hyperparameters"]), "best_value": summary["value"],
                        "final": {config_key(model): {"epochs": int(model["epochs"]),
                                                      "val_balanced_accuracy": float(model["val_balanced_accuracy"])}
                                  for model in models},
                        **({"plan": summary["halving"]} if search == "sha" else {})}
    grid_run, sha_run = runs["grid"], runs["sha"]
    return {"machine": machine(), "configs": len(halving.grid(grid)), "grid": grid, "workers": workers, "epochs": epochs,
            "eta": eta, "batch_size": batch_size, "seed": seed, "runs": runs,
            "grid_s": grid_run["wall_s"], "sha_s": sha_run["wall_s"], "sha_over_grid": sha_run["wall_s"] / grid_run["wall_s"],
            "grid_configuration_epochs": grid_run["configuration_epochs"],
            "sha_configuration_epochs": sha_run["configuration_epochs"],
            "best_grid": grid_run["best"], "best_sha": sha_run["best"], "same_best": grid_run["best"] == sha_run["best"],
            "best_difference": abs(grid_run["best_value"] - sha_run["best_value"])}


# Report -----------------------------------------------------------------------------------------------

def table_rows(results: dict) -> list[tuple[str, str, str, str]]:
    """(stage, figure, value, what limits it) for every headline figure."""
    prep_, pipe, hop, parity = (results[k] for k in ("prep", "input_pipeline", "model_hopper", "accuracy_parity"))
    step = pipe["train_step"]
    rows = [
        ("1 prep", f"Spark local[*], job only, {prep_['windows']:,} windows (windows/s)",
         f"{prep_['spark_job_windows_per_s']:,.0f}",
         f"the executors' own work (H5 reading, .npy encoding, Parquet writing) split over {prep_['cores']} "
         f"cores would take {prep_['baseline_s'] / prep_['cores']:.1f} s of the job's {prep_['spark_job_s']:.1f} s; "
         f"the rest is Spark's: {prep_['spark_first_job_s']:.1f} s of it the start of its Python workers, which "
         "the first job of any Spark application pays (a trivial one included), then tasks and the metadata"),
        ("1 prep", "Spark local[*], whole command (windows/s)", f"{prep_['spark_wall_windows_per_s']:,.0f}",
         f"JVM and Spark start-up: {prep_['spark_wall_s'] - prep_['spark_job_s']:.0f} s of "
         f"{prep_['spark_wall_s']:.0f} s"),
        ("1 prep", "single process, pyarrow only (windows/s)", f"{prep_['baseline_windows_per_s']:,.0f}",
         f"one core; reading the H5 files takes {prep_['baseline_read_s']:.2f} s of {prep_['baseline_s']:.2f} s"),
        ("1 prep", "Spark job / baseline", f"{prep_['spark_job_over_baseline']:.2f}",
         f"whole command: {prep_['spark_wall_over_baseline']:.2f}"),
        ("2 input", f"shard reader + transformation_fn, 1 worker of {pipe['pipeline']['shards']}, "
         f"{pipe['pipeline']['rows']:,} windows, warm (windows/s)", f"{pipe['pipeline']['warm_windows_per_s']:,.0f}",
         f"one core, the reader's thread and tf.data's sharing it: {pipe['pipeline']['limit']}"),
        ("2 input", "the same, cold: first pass, files evicted from the page cache (windows/s)",
         f"{pipe['pipeline']['cold_windows_per_s']:,.0f}",
         f"reading {pipe['pipeline']['shard_mb']:,.0f} MB from disk, and tf.data's first build"),
        ("2 input", f"training step, amp 2, {step['batch_size']} sequences, 1 thread (windows/s)",
         f"{step['windows_per_s']:,.0f}",
         f"one core: {step['step_s']:.1f} s per step (the first, tracing included: {step['first_step_s']:.1f} s)"),
        ("2 input", "headroom = pipeline / training", f"{pipe['warm_headroom']:.1f}",
         f"cold pass: {pipe['cold_headroom']:.1f}"),
    ]
    w, scaling = hop["workers"], hop["machine_scaling"]["each_over_alone"]
    best_s = hop["ideal_s"] / scaling  # the ideal at the speed this machine gives w processes at once
    rows += [
        ("3 hopper", f"ideal: runs alone on one core, summed, / {w} workers (s)", f"{hop['ideal_s']:.0f}",
         f"training alone {hop['alone_train_windows_per_s']:,.0f} windows/s, tracing once per configuration"),
        ("3 hopper", f"machine: {w} one-thread trainings at once, each vs one alone", f"{scaling:.2f}",
         f"shared caches, memory bandwidth or physical cores: this machine's best is {best_s:.0f} s"),
    ]
    for run in hop["runs"]:
        label = f"polling {run['polling_period_s']:g} s"
        rows += [
            ("3 hopper", f"{label}: wall-clock (s)", f"{run['wall_s']:.0f}",
             f"start-up {run['startup_s']:.0f} s, between epochs {run['between_phases_s']:.0f} s, "
             f"wrap-up {run['wrapup_s']:.0f} s; the rest below, per worker"),
            ("3 hopper", f"{label}: machine's best / actual", f"{run['machine_best_over_actual']:.2f}",
             f"one-by-one ideal / actual: {run['ideal_over_actual']:.2f} (inside epochs only: "
             f"{run['ideal_over_phases']:.2f})"),
            ("3 hopper", f"{label}: training + validation (s per worker)",
             f"{(run['train_worker_s'] + run['validate_worker_s']) / w:.0f}",
             f"training {run['hopped_train_windows_per_worker_s']:,.0f} windows/s per worker; data reading and "
             "retracing inside (below)"),
            ("3 hopper", f"{label}: model hops (s per worker)",
             f"{(run['init_worker_s'] + run['finalize_worker_s']) / w:.0f}",
             f"weights in (or a first build) + tf.data build {run['init_worker_s'] / w:.0f} s, "
             f"hop checkpoint (+ the end-of-epoch Keras file) out {run['finalize_worker_s'] / w:.0f} s"),
        ]
        if "busiest_worker_s" in run:  # runs measured before this figure existed lack it
            rows.append(
                ("3 hopper", f"{label}: busiest worker's visits / epochs' time",
                 f"{run['busiest_worker_s'] / run['phases_s']:.2f}",
                 f"per epoch, the worker with the most work held models for {run['busiest_worker_s']:.0f} s of the "
                 f"epochs' {run['phases_s']:.0f} s: no order of the same visits ends sooner"))
        rows += [
            ("3 hopper", f"{label}: scheduling idle (s per worker)",
             f"{(run['polling_worker_s'] + run['waiting_worker_s']) / w:.0f}",
             f"polling and RPC {run['polling_worker_s'] / w:.0f} s; no visit due on the worker (its next "
             f"configurations are on the other worker, or the epoch's last visits) {run['waiting_worker_s'] / w:.0f} s"),
        ]
    rows += [
        ("3 hopper", "data reading, estimated (s per worker)", f"{hop['reading_estimate_worker_s'] / w:.0f}",
         "rows read / stage 2's warm reader rate; inside training + validation, overlapped by tf.data prefetch"),
        ("3 hopper", "retracing, estimated (s per worker)", f"{hop['retracing_estimate_worker_s'] / w:.0f}",
         "each worker traces fit/evaluate once per configuration and keeps the model; inside training + validation"),
    ]
    rows += [("4 parity", "largest difference, hopped vs alone, val balanced accuracy",
              f"{parity['largest_difference']:.3f}",
              "same initial weights; alone shuffles all sequences each epoch, hopped shuffles each row group "
              "with 256 carried sequences within each partition, partition after partition"),
             ("4 parity", "largest difference between the two hopped runs", f"{parity['hopped_spread']:.3f}",
              "seeded shuffles and a fixed shard order per configuration: timing changes nothing computed"),
             ("4 parity", "alone: largest change of a curve over its last epoch",
              f"{last_epoch_change(hop['one_by_one']['runs']):.3f}",
              "the curves have settled when this is well below the hopped-vs-alone goal (0.02)")]
    if "halving" in results:
        rows += halving_rows(results["halving"])
    return rows


def halving_rows(halving: dict) -> list[tuple[str, str, str, str]]:
    grid_run, sha_run = halving["runs"]["grid"], halving["runs"]["sha"]
    plan = sha_run["plan"]["brackets"][0]["rungs"]
    rungs = " -> ".join(f"{rung['configurations']} x {rung['epoch']}" for rung in plan)
    idle = [rung for rung in plan if rung["configurations"] < halving["workers"]]
    where = "; ".join(f"{halving['workers'] - rung['configurations']} of {halving['workers']} workers idle up to "
                      f"epoch {rung['epoch']}" for rung in idle)
    what = f"{halving['configs']} configurations x {halving['epochs']} epochs, eta {halving['eta']}"
    return [
        ("5 halving", f"grid, {what.split(', eta')[0]}: wall-clock (s)", f"{halving['grid_s']:.0f}",
         f"{halving['grid_configuration_epochs']} configuration-epochs"),
        ("5 halving", f"sha, {what}: wall-clock (s)", f"{halving['sha_s']:.0f}",
         f"{halving['sha_configuration_epochs']} configuration-epochs ({rungs}, configurations x epochs); "
         f"{where or 'no worker idle'}; start-up and wrap-up as for grid"),
        ("5 halving", "sha / grid, wall-clock", f"{halving['sha_over_grid']:.2f}",
         f"configuration-epochs: {halving['sha_configuration_epochs'] / halving['grid_configuration_epochs']:.2f}; "
         "the fixed costs of a run (Spark start, workers, wrap-up) are not halved"),
        ("5 halving", "best configuration, grid vs sha, val balanced accuracy difference",
         f"{halving['best_difference']:.3f}",
         f"grid: {halving['best_grid']} {grid_run['best_value']:.4f}; sha: {halving['best_sha']} "
         f"{sha_run['best_value']:.4f}" + ("" if halving["same_best"] else "; not the same configuration")
         + "; hop order differs between the runs"),
    ]


def markdown_table(rows: list[tuple[str, str, str, str]]) -> str:
    lines = ["| stage | figure | value | what limits it |", "|---|---|--:|---|"]
    lines += [f"| {' | '.join(row)} |" for row in rows]
    return "\n".join(lines)


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--subjects", type=int, default=12,
                        help="demo subjects of stages 3 and 4, the training stages (default %(default)s)")
    parser.add_argument("--days", type=int, default=1, help="recording days per subject (default %(default)s)")
    parser.add_argument("--hours", type=float, default=7.0, help="hours per recording day (default %(default)s)")
    parser.add_argument("--data-path-subjects", type=int, default=120,
                        help="demo subjects of stages 1 and 2, the data path (default %(default)s)")
    parser.add_argument("--data-path-days", type=int, default=2, help="their days (default %(default)s)")
    parser.add_argument("--data-path-hours", type=float, default=12.0,
                        help="their hours per day (default %(default)s: 1,036,800 windows)")
    parser.add_argument("--seed", type=int, default=0,
                        help="seed of the demo data and of every configuration's initial weights (default %(default)s)")
    parser.add_argument("--workers", type=int, default=2, help="cerebro workers (default %(default)s)")
    parser.add_argument("--epochs", type=int, default=4,
                        help="epochs per configuration of stages 3 and 4 (default %(default)s: curves settle)")
    parser.add_argument("--batch-size", type=int, default=16,
                        help="sequences per step in stages 3 and 4 (default %(default)s: the demo data holds "
                             f"too few sequences for model_selection.py's {SEARCH_BATCH_SIZE})")
    parser.add_argument("--step-batch-size", type=int, default=SEARCH_BATCH_SIZE,
                        help="sequences per step of stage 2's training step (default %(default)s)")
    parser.add_argument("--steps", type=int, default=3, help="timed training steps in stage 2 (default %(default)s)")
    parser.add_argument("--scaling-steps", type=int, default=5,
                        help="timed training steps of each process in stage 3's machine scaling (default %(default)s)")
    parser.add_argument("--grid", type=json.loads, default=DEFAULT_GRID,
                        help="JSON search space of stages 3 and 4 (default %(default)s)")
    parser.add_argument("--halving-subjects", type=int, default=16,
                        help="demo subjects of stage 5, successive halving (default %(default)s)")
    parser.add_argument("--halving-hours", type=float, default=0.75,
                        help="their hours of one day (default %(default)s)")
    parser.add_argument("--halving-epochs", type=int, default=8, help="stage 5's most epochs (default %(default)s)")
    parser.add_argument("--halving-eta", type=int, default=2, help="stage 5's eta (default %(default)s)")
    parser.add_argument("--halving-grid", type=json.loads, default=HALVING_GRID,
                        help="JSON search space of stage 5 (default %(default)s)")
    parser.add_argument("--halving-only", action="store_true",
                        help="run stage 5 only, keeping stages 1 to 4 of the previous bench/results.json")
    parser.add_argument("--hopper-only", action="store_true",
                        help="run stages 3 and 4 only, keeping stages 1, 2 and 5 of the previous bench/results.json")
    parser.add_argument("--data-path-only", action="store_true",
                        help="run stages 1 and 2 only, keeping stages 3 and 4 of the previous bench/results.json "
                             "(recorded there with the machine and date they ran on)")
    args = parser.parse_args()
    if args.epochs < 2:
        parser.error("--epochs must be at least 2: the second epoch, without tracing, prices the first one's")
    return args


def main() -> None:
    args = parse_args()
    started = time.perf_counter()
    shutil.rmtree(WORK, ignore_errors=True)
    WORK.mkdir(parents=True)
    if args.halving_only:
        results = json.loads(RESULTS.read_text())
        load = {"start": load_average()}
        results["halving"] = stage_halving_with_data(args)
        load["halving"] = results["halving"]["load_average"] = load_average()
        finish(results, started, load)
        return
    if args.hopper_only:
        results = json.loads(RESULTS.read_text())
        load = {"start": load_average()}
        results["training_stages_measured"] = {"machine": machine(), "settings": vars(args)}
        results["data"] = stage_training(args, results["input_pipeline"]["pipeline"]["warm_rows_per_s"], results)
        load["model_hopper"] = load_average()
        finish(results, started, load)
        return
    # Other processes on the machine slow every figure down: the 1-minute load average after each stage.
    load = {"start": load_average()}
    results = {"machine": machine(), "settings": vars(args), "load_average": load}
    results["data_path_data"] = make_data(WORK / "h5_large", args.data_path_subjects, args.data_path_days,
                                          args.data_path_hours, args.seed)
    large_store = WORK / "store_large"
    results["prep"] = stage_prep(WORK / "h5_large", large_store, args.workers)
    load["prep"] = load_average()
    results["input_pipeline"] = stage_input_pipeline(large_store, args.workers, args.step_batch_size, args.steps)
    shutil.rmtree(large_store)
    load["input_pipeline"] = load_average()
    if args.data_path_only:
        earlier = json.loads(RESULTS.read_text())
        kept = earlier.get("training_stages_measured") or {key: earlier[key] for key in ("machine", "settings")}
        results.update({key: earlier[key] for key in ("data", "model_hopper", "accuracy_parity", "halving") if key in earlier},
                       training_stages_measured=kept)
        finish(results, started, load)
        return
    results["data"] = stage_training(args, results["input_pipeline"]["pipeline"]["warm_rows_per_s"], results)
    load["model_hopper"] = load_average()
    results["halving"] = stage_halving_with_data(args)
    load["halving"] = load_average()
    finish(results, started, load)


def stage_training(args: argparse.Namespace, pipeline_rows_per_s: float, results: dict) -> dict:
    """Stages 3 and 4 on their own store, into ``results``; return that store's demo data."""
    data = make_data(WORK / "h5", args.subjects, args.days, args.hours, args.seed)
    store = WORK / "store"
    prep_with_spark(WORK / "h5", store, args.workers, "prep_training_store")
    results["model_hopper"] = stage_model_hopper(store, args.grid, args.workers, args.epochs, args.batch_size,
                                                 args.seed, args.scaling_steps, pipeline_rows_per_s)
    results["accuracy_parity"] = stage_accuracy_parity(results["model_hopper"])
    return data


def stage_halving_with_data(args: argparse.Namespace) -> dict:
    """Stage 5 on its own small store (see :func:`stage_halving`)."""
    data = make_data(WORK / "h5_halving", args.halving_subjects, 1, args.halving_hours, args.seed)
    store = WORK / "store_halving"
    prep_with_spark(WORK / "h5_halving", store, args.workers, "prep_halving_store")
    return {"data": data, **stage_halving(store, args.halving_grid, args.workers, args.halving_epochs,
                                          args.halving_eta, args.batch_size, args.seed)}


def finish(results: dict, started: float, load: dict) -> None:
    """Write bench/results.json and print the table."""
    results["total_s"] = time.perf_counter() - started
    results["table"] = table_rows(results)
    RESULTS.write_text(json.dumps(results, indent=2) + "\n")
    print(markdown_table(results["table"]))
    print(f"\n{results['machine']['cpu']}, {results['machine']['cores']} cores, {results['machine']['ram_gb']} GB; "
          f"1-minute load average {', '.join(f'{stage} {value:.1f}' for stage, value in load.items())}; "
          f"{results['total_s'] / 60:.1f} min. Details: {RESULTS.relative_to(PROJECT)}")


if __name__ == "__main__":
    main()
