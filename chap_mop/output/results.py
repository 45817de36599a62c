"""What a model selection run leaves for people: tables, a summary, a plot, progress lines.

Files in the results folder:

* ``models.csv``   one row per configuration: run id, hyper-parameters, final metrics, best epoch
* ``history.csv``  one row per configuration and epoch, every metric
* ``summary.json`` best run and its hyper-parameters, metric and value, epochs, workers,
  wall-clock seconds, sequences per epoch
* ``validation_<metric>.png``  the validation metric per epoch of every configuration
* ``report.html``  all of the above on one self-contained page (:mod:`chap_mop.output.report`)
"""
import csv
import json
from pathlib import Path

from chap_mop.model import metrics
from chap_mop.model.ranking import METRIC_COLUMNS, best_index, configuration_key, is_larger_better
from chap_mop.output.report import write_report


class RunLog:
    """Collects every run's hyper-parameters and per-epoch metrics while cerebro trains.

    Register :meth:`on_epoch_end` as an epoch listener of a cerebro search (see
    :mod:`chap_mop.cerebro_compat`); it adds the exact accuracy metrics and prints a table.

    :param stopped_at: a halving search's run id -> rung at which it stopped (filled as it trains);
        None for searches that train every configuration to the end.
    :param failed: run id -> epoch whose loss was not finite (the search's, filled as it trains).
    """

    def __init__(self, search, evaluation_metric: str, num_epochs: int, stopped_at: dict[str, int] | None = None,
                 failed: dict[str, int] | None = None):
        self.search = search
        self.evaluation_metric = evaluation_metric
        self.num_epochs = num_epochs
        self.stopped_at = stopped_at
        self.failed = {} if failed is None else failed
        self.history: dict[str, dict[str, list[float]]] = {}

    def on_epoch_end(self, estimators: list, estimator_results: dict) -> None:
        for estimator in estimators:
            run_id = estimator.getRunId()
            metrics.add_derived_metrics(estimator_results[run_id])
            self.history[run_id] = estimator_results[run_id]
        epoch = max(estimator.getEpochs() for estimator in estimators)
        print(f"\n=== epoch {epoch}/{self.num_epochs} done; metrics so far ===")
        print(self.table())

    def params(self, run_id: str) -> dict:
        return self.search.run_hyperparameters[run_id]

    def epochs_done(self, run_id: str) -> int:
        return len(self.history[run_id].get("val_loss", []))

    def ranked(self) -> list[str]:
        """Run ids, failed ones last; most epochs trained first (successive halving stops some early),
        then best final validation value of the evaluation metric first (NaN last)."""
        metric, larger = "val_" + self.evaluation_metric, is_larger_better(self.evaluation_metric)

        def key(run_id: str) -> tuple[bool, int, bool, float]:
            return configuration_key(run_id in self.failed, self.epochs_done(run_id), self.history[run_id][metric][-1],
                                     larger)

        return sorted(self.history, key=key)

    def best_epoch(self, run_id: str) -> int:
        """1-based epoch with the best validation value of the evaluation metric."""
        values = self.history[run_id]["val_" + self.evaluation_metric]
        return best_index(values, is_larger_better(self.evaluation_metric)) + 1

    def table(self) -> str:
        """A fixed-width table of every run's latest metrics."""
        names = list(self.search.run_hyperparameters[next(iter(self.history))])
        stops = self.stopped_at is not None
        fails = bool(self.failed)
        header = ["run", *names, "epoch", *(["stopped"] if stops else []), *(["failed"] if fails else []),
                  *METRIC_COLUMNS]
        lines = [header]
        for run_id, results in self.history.items():
            latest = [results.get(column, [float("nan")])[-1] for column in METRIC_COLUMNS]
            stopped = [f"rung {self.stopped_at[run_id]}" if run_id in self.stopped_at else ""] if stops else []
            failed = [f"epoch {self.failed[run_id]}" if run_id in self.failed else ""] if fails else []
            lines.append([run_id, *(self.params(run_id)[name] for name in names), self.epochs_done(run_id),
                          *stopped, *failed, *(f"{value:.4f}" for value in latest)])
        widths = [max(len(str(line[i])) for line in lines) for i in range(len(header))]
        return "\n".join("  ".join(str(cell).rjust(width) for cell, width in zip(line, widths)) for line in lines)

    def model_rows(self) -> list[dict]:
        """One row per configuration; ``failed_at_epoch``: the epoch whose loss was not finite (empty: none);
        halving searches add ``stopped_at_rung`` (empty: trained to the end)."""
        return [{"run_id": run_id, **self.params(run_id),
                 **{column: results[column][-1] for column in METRIC_COLUMNS},
                 "epochs": self.epochs_done(run_id), "best_epoch": self.best_epoch(run_id),
                 **({} if self.stopped_at is None else {"stopped_at_rung": self.stopped_at.get(run_id, "")}),
                 "failed_at_epoch": self.failed.get(run_id, "")}
                for run_id, results in self.history.items()]

    def history_rows(self) -> list[dict]:
        return [{"run_id": run_id, **self.params(run_id), "epoch": epoch + 1,
                 **{name: values[epoch] for name, values in sorted(results.items())}}
                for run_id, results in self.history.items() for epoch in range(self.epochs_done(run_id))]


def write_csv(path: Path, rows: list[dict]) -> None:
    columns = list(dict.fromkeys(key for row in rows for key in row))
    with open(path, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=columns)
        writer.writeheader()
        writer.writerows(rows)


def plot_validation_metric(path: Path, run_log: RunLog) -> None:
    """One line per configuration: validation metric against epoch."""
    import matplotlib
    import matplotlib.ticker
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    metric = run_log.evaluation_metric
    figure, axes = plt.subplots(figsize=(8, 5))
    for run_id, results in run_log.history.items():
        values = results["val_" + metric]
        label = ", ".join(f"{name}={value}" for name, value in run_log.params(run_id).items())
        axes.plot(range(1, len(values) + 1), values, marker="o", label=label)
    axes.xaxis.set_major_locator(matplotlib.ticker.MaxNLocator(integer=True))
    axes.set_xlabel("epoch")
    axes.set_ylabel(f"validation {metric}")
    axes.set_title(f"Validation {metric} per epoch, one line per configuration")
    axes.grid(alpha=0.3)
    axes.legend(fontsize=7)
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)


def write_results(results_dir: Path, run_log: RunLog, summary: dict) -> None:
    """Write models.csv, history.csv, summary.json, the validation plot and report.html into ``results_dir``."""
    model_rows, history_rows = run_log.model_rows(), run_log.history_rows()
    write_csv(results_dir / "models.csv", model_rows)
    write_csv(results_dir / "history.csv", history_rows)
    (results_dir / "summary.json").write_text(json.dumps(summary, indent=2, default=str) + "\n")
    plot_validation_metric(results_dir / f"validation_{run_log.evaluation_metric}.png", run_log)
    write_report(results_dir / "report.html", summary, model_rows, history_rows, run_log.evaluation_metric,
                 list(run_log.params(model_rows[0]["run_id"])), is_larger_better(run_log.evaluation_metric))
