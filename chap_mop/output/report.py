"""``report.html``: one self-contained page about a model selection run, for people.

In order: a summary (best run and its hyper-parameters, metric and value, search, epochs, workers,
data store, wall-clock, resumes, sequences per window size, then any other scalar key of
``summary.json`` as settings); a leaderboard of every configuration, best first, sortable by a click
on a column header; learning curves (loss, accuracy, balanced accuracy per epoch); the final
validation metric against each hyper-parameter; and, only when the summary has a ``"test"`` entry,
the test metrics and confusion matrix. Figures are base64 PNG ``data:`` URIs, CSS and JavaScript
are inline: the file opens from a file manager, copied anywhere, with no network.
"""
import base64
import html
import io
import math
import os
from pathlib import Path

from chap_mop.model.ranking import CLASS_NAMES, METRIC_COLUMNS, RECORDED_METRICS, configuration_key
from chap_mop.output.plots import confusion_figure, pyplot
from chap_mop.text import describe, format_duration

LOG_SCALE_CANDIDATES = ("lr", "l2_reg")
# Keys the summary list shows itself; every other scalar key goes to the settings table.
SUMMARY_KEYS = {"best_run_id", "hyperparameters", "evaluation_metric", "value", "search", "epochs", "workers",
                "data_store", "wall_clock_seconds", "resumes", "sequences_per_epoch", "test", "halving",
                "start_weights", "class_weights"}

CSS = """
body { font-family: system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; color: #222; margin: 0; }
main { max-width: 1100px; margin: 0 auto; padding: 1.5rem; } h2 { font-size: 1.25rem; margin-top: 2rem; }
table { border-collapse: collapse; font-size: .82rem; margin: .5rem 0; } .scroll { overflow-x: auto; }
th, td { padding: .3rem .45rem; border-bottom: 1px solid #ddd; text-align: left; }
td[data-num] { text-align: right; font-variant-numeric: tabular-nums; } img { max-width: 100%; height: auto; }
tbody tr:nth-child(even) { background: #f5f7fa; } .kv th { color: #555; width: 14rem; }
table.sortable th { cursor: pointer; user-select: none; background: #eef1f5; }
table.sortable th[data-order="asc"]::after { content: " \\25B2"; }
table.sortable th[data-order="desc"]::after { content: " \\25BC"; }
tr.best, tr.best:nth-child(even) { background: #fff3c4; font-weight: 600; }
"""

# Sorts the clicked column of its table; numbers (cells with data-num) numerically, text otherwise.
SORT_JS = """
document.querySelectorAll("table.sortable th").forEach(function (th, column) {
  th.addEventListener("click", function () {
    var body = th.closest("table").tBodies[0], ascending = th.dataset.order !== "asc";
    th.parentNode.querySelectorAll("th").forEach(function (other) { delete other.dataset.order; });
    th.dataset.order = ascending ? "asc" : "desc";
    Array.from(body.rows).sort(function (a, b) {
      var x = a.cells[column], y = b.cells[column];
      var order = ("num" in x.dataset && "num" in y.dataset) ? Number(x.dataset.num) - Number(y.dataset.num)
        : x.textContent.localeCompare(y.textContent);
      return ascending ? order : -order;
    }).forEach(function (row) { body.appendChild(row); });
  });
});
"""


def write_report(path: Path, summary: dict, model_rows: list[dict], history_rows: list[dict],
                 evaluation_metric: str, hyperparameter_names: list[str], larger_is_better: bool) -> None:
    """Write the report to ``path`` (e.g. ``results/report.html``), atomically.

    :param summary: what the run writes as ``summary.json``; unknown keys are shown, not required.
    :param model_rows: one dict per configuration, as in ``models.csv`` (numbers, not strings).
    :param history_rows: one dict per configuration and epoch, as in ``history.csv``.
    :param evaluation_metric: e.g. ``"balanced_accuracy"``; its validation value ranks the runs.
    :param larger_is_better: the metric's direction (False for ``"loss"``).
    """
    column = "val_" + evaluation_metric.removeprefix("val_")  # summary.json names it with the prefix
    # Most epochs first: a configuration that successive halving stopped early does not outrank the finishers.
    ranked = sorted(model_rows, key=lambda row: configuration_key(bool(row.get("failed_at_epoch")), row.get("epochs", 0),
                                                                  row.get(column), larger_is_better))
    best_run = summary.get("best_run_id", ranked[0]["run_id"] if ranked else None)
    sections = [summary_section(summary), leaderboard_section(ranked, hyperparameter_names, column, best_run),
                figure_section("Learning curves", learning_curves(history_rows, ranked, hyperparameter_names))]
    if hyperparameter_names:
        sections.append(figure_section(f"Hyper-parameters vs final {column}",
                                       hyperparameter_figure(ranked, hyperparameter_names, column, best_run)))
    if isinstance(summary.get("test"), dict):
        sections.append(test_section(summary["test"]))
    page = (f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
            f"<title>Model selection report: {html.escape(str(best_run))}</title><style>{CSS}</style></head>\n"
            f'<body><main>\n{"".join(sections)}</main><script>{SORT_JS}</script></body></html>\n')
    # A reader (or a crash) never sees half a page: write beside the target, then rename over it.
    partial = path.with_name(f".{path.name}.partial")
    partial.write_text(page, encoding="utf-8")
    os.replace(partial, path)


def format_value(value, exact: bool = False) -> str:
    """Floats to 4 decimals, or ``exact`` (hyper-parameters: an l2_reg of 1e-05 is not 0.0000)."""
    if isinstance(value, float):
        return "–" if not math.isfinite(value) else f"{value:g}" if exact else f"{value:.4f}"
    return str(value)


def config_label(row: dict, names: list[str]) -> str:
    """Compact hyper-parameters for a legend, e.g. ``lr 0.001, l2 0.0001, 7 min, amp 2``."""
    return describe({name: row[name] for name in names})


def cell(value, exact: bool = False) -> str:
    # data-num carries the exact number so the sort is numeric whatever the shown rounding.
    numeric = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    attribute = f' data-num="{value!r}"' if numeric else ""
    return f"<td{attribute}>{html.escape(format_value(value, exact))}</td>"


def key_value_table(pairs: list[tuple[str, str]]) -> str:
    rows = "".join(f"<tr><th>{html.escape(key)}</th><td>{html.escape(text)}</td></tr>" for key, text in pairs)
    return f'<table class="kv"><tbody>{rows}</tbody></table>'


def summary_section(summary: dict) -> str:
    hyperparameters = ", ".join(f"{name} = {format_value(value, exact=True)}"
                                for name, value in summary.get("hyperparameters", {}).items())
    sequences = "; ".join(f"{win} min windows: " + ", ".join(f"{split} {count}" for split, count in counts.items())
                          for win, counts in summary.get("sequences_per_epoch", {}).items())
    known = [("Best run", "best_run_id", str), ("Hyper-parameters", "hyperparameters", lambda _: hyperparameters),
             ("Metric", "evaluation_metric", str), ("Value", "value", format_value), ("Search", "search", str),
             ("Epochs", "epochs", str), ("Workers", "workers", str), ("Data store", "data_store", str),
             ("Wall-clock", "wall_clock_seconds", format_duration), ("Resumes", "resumes", lambda r: str(len(r))),
             ("Sequences per epoch", "sequences_per_epoch", lambda _: sequences),
             ("Successive halving", "halving", halving_text), ("Start weights", "start_weights", start_text),
             ("Class weights", "class_weights", lambda weights: ", ".join(
                 f"{name} {weight:g}" for name, weight in zip(CLASS_NAMES, weights)))]
    pairs = [(label, show(summary[key])) for label, key, show in known if key in summary]
    settings = [(key, format_value(value)) for key, value in summary.items()
                if key not in SUMMARY_KEYS and (value is None or isinstance(value, (str, int, float, bool)))]
    text = "<h1>Model selection report</h1>\n<h2>Summary</h2>" + key_value_table(pairs)
    return text + ("<h2>Settings</h2>" + key_value_table(settings) if settings else "") + "\n"


def start_text(start: dict) -> str:
    """``random (seed 0)``, or ``/m/CHAP_ALL_ADULTS.pth (DeepPostures state_dict (.pth), amp factor 2,
    SHA-256 0a1b...)``."""
    if start.get("from") == "random":
        return "random" + (f" (seed {start['seed']})" if start.get("seed") is not None else " (unseeded)")
    return (f"{start.get('from')} ({start.get('format')}, amp factor {start.get('amp_factor')}, "
            f"SHA-256 {str(start.get('sha256', ''))[:16]}...)")


def halving_text(halving: dict) -> str:
    """``eta 2; bracket 1: 4 x 1 -> 2 x 2 (configurations x epochs); 6 of 8 configuration-epochs trained``."""
    brackets = "; ".join(f"bracket {b['bracket']}: " + " -> ".join(f"{r['configurations']} x {r['epoch']}"
                                                                  for r in b["rungs"]) for b in halving["brackets"])
    return (f"eta {halving['eta']}; {brackets} (configurations x epochs); "
            f"{halving['configuration_epochs_trained']} of {halving['configuration_epochs_without_stopping']} "
            "configuration-epochs trained")


def leaderboard_section(ranked: list[dict], names: list[str], column: str, best_run) -> str:
    columns = [name for name in ["run_id", *names, *METRIC_COLUMNS, "epochs", "best_epoch", "stopped_at_rung",
                                 "failed_at_epoch"]
               if any(name in row for row in ranked)]
    header = "".join(f"<th>{html.escape(name.replace('_', ' '))}</th>" for name in ["rank", *columns])
    body = "".join(f'<tr{" class=best" if row.get("run_id") == best_run else ""}>{cell(rank)}'
                   + "".join(cell(row.get(name, ""), exact=name in names) for name in columns) + "</tr>"
                   for rank, row in enumerate(ranked, start=1))
    return (f"<h2>Leaderboard</h2><p>Ranked by {html.escape(column)}, best first; click a header to sort.</p>"
            f'<div class="scroll"><table class="sortable"><thead><tr>{header}</tr></thead>'
            f"<tbody>{body}</tbody></table></div>\n")


def figure_section(title: str, figure) -> str:
    import matplotlib.pyplot as plt
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=100)
    plt.close(figure)  # pyplot keeps every open figure alive otherwise
    data = base64.b64encode(buffer.getvalue()).decode("ascii")
    return f'<h2>{html.escape(title)}</h2><img alt="{html.escape(title)}" src="data:image/png;base64,{data}">\n'


def learning_curves(history_rows: list[dict], ranked: list[dict], names: list[str]):
    """Three panels (loss, accuracy, balanced accuracy) per epoch, one colour per configuration."""
    plt = pyplot()
    from matplotlib.lines import Line2D
    from matplotlib.ticker import MaxNLocator
    figure, axes = plt.subplots(1, len(RECORDED_METRICS), figsize=(11, 3.4 + 0.22 * math.ceil(len(ranked) / 3)),
                                layout="constrained")
    colours = plt.get_cmap("tab10" if len(ranked) <= 10 else "viridis")
    handles = []
    for index, row in enumerate(ranked):
        colour = colours(index if len(ranked) <= 10 else index / (len(ranked) - 1))
        epochs = sorted((entry for entry in history_rows if entry["run_id"] == row["run_id"]),
                        key=lambda entry: entry["epoch"])
        for panel, metric in zip(axes, RECORDED_METRICS):
            x = [entry["epoch"] for entry in epochs]
            panel.plot(x, [entry.get("train_" + metric) for entry in epochs], "--x", color=colour, markersize=4)
            panel.plot(x, [entry.get("val_" + metric) for entry in epochs], "-o", color=colour, markersize=4)
        handles.append(Line2D([], [], color=colour, label=config_label(row, names)))
    for panel, metric in zip(axes, RECORDED_METRICS):
        panel.set_title(metric.replace("_", " "))
        panel.set_xlabel("epoch")
        panel.set_xlim(0.5, max((entry["epoch"] for entry in history_rows), default=1) + 0.5)
        panel.xaxis.set_major_locator(MaxNLocator(integer=True, min_n_ticks=1))
        panel.grid(alpha=0.3)
    # Markers as well as dashes: a 1-epoch run has points, no lines.
    axes[0].legend(handles=[Line2D([], [], color="grey", linestyle="--", marker="x", markersize=4, label="train"),
                            Line2D([], [], color="grey", marker="o", markersize=4, label="validation")], fontsize=8)
    figure.legend(handles=handles, loc="outside lower center", ncol=max(1, min(3, len(handles))), fontsize=8,
                  frameon=False)
    return figure


def hyperparameter_figure(ranked: list[dict], names: list[str], column: str, best_run):
    """One panel per hyper-parameter: its value against the final validation metric of each run."""
    plt = pyplot()
    figure, axes = plt.subplots(1, len(names), figsize=(max(4.0, 2.9 * len(names)), 3.1), sharey=True,
                                layout="constrained", squeeze=False)
    for panel, name in zip(axes[0], names):
        values = [row[name] for row in ranked]
        panel.scatter(values, [row.get(column) for row in ranked], color="tab:blue", alpha=0.7, label="run")
        best = [row for row in ranked if row["run_id"] == best_run]
        panel.scatter([row[name] for row in best], [row.get(column) for row in best], marker="*", s=180,
                      color="tab:red", zorder=3, label="best")
        numeric = all(isinstance(value, (int, float)) for value in values)
        if (name in LOG_SCALE_CANDIDATES and numeric and min(values) > 0 and max(values) / min(values) > 10):
            panel.set_xscale("log")
        if numeric and len(set(values)) <= 8:  # a grid: tick exactly the values tried
            panel.set_xticks(sorted(set(values)), [f"{value:g}" for value in sorted(set(values))])
            panel.minorticks_off()
        panel.set_title(name)
        panel.margins(x=0.15, y=0.12)  # keeps the best marker off the frame
        panel.grid(alpha=0.3)
    axes[0][0].set_ylabel(column)
    axes[0][0].legend(fontsize=8)
    return figure


def test_section(test: dict) -> str:
    """Test metrics per level (e.g. ``window``) and their confusion matrices; rows true, columns predicted."""
    levels = {name: level for name, level in test.items() if isinstance(level, dict)}
    metrics = list(dict.fromkeys(key for level in levels.values() for key, value in level.items()
                                 if isinstance(value, (int, float))))
    header = "".join(f"<th>{html.escape(name.replace('_', ' '))}</th>" for name in ["level", *metrics])
    body = "".join(f"<tr>{cell(name)}" + "".join(cell(level.get(metric, "")) for metric in metrics) + "</tr>"
                   for name, level in levels.items())
    others = [(key, format_value(value)) for key, value in test.items() if key not in levels]
    text = (f"<h2>Test</h2>{key_value_table(others) if others else ''}"
            f"<table><thead><tr>{header}</tr></thead><tbody>{body}</tbody></table>\n")
    matrices = {name: level["confusion_matrix"] for name, level in levels.items() if "confusion_matrix" in level}
    return text + (figure_section("Test confusion matrix", confusion_figure(matrices)) if matrices else "")
