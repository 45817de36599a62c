"""report.html: one self-contained file with every configuration, its figures, and no network references."""
import csv
import json
import os
import re
from pathlib import Path

import pytest

from chap_mop.output.report import write_report

NAMES = ["lr", "l2_reg", "win_size", "amp_factor"]
CONFIGS = [{"lr": 0.001, "l2_reg": 0.0001, "win_size": 1, "amp_factor": 1},
           {"lr": 0.0001, "l2_reg": 0.001, "win_size": 7, "amp_factor": 2},
           {"lr": 0.01, "l2_reg": 0.00001, "win_size": 1, "amp_factor": 2}]
# A finished run of model_selection.py (its results folder), read when it is there.
REAL_RUN = Path(os.environ.get("CHAP_MOP_REPORT_RUN", "/tmp/s/r1"))
IMAGE = "data:image/png;base64,"


def synthetic_rows(epochs: int = 3) -> tuple[list[dict], list[dict]]:
    """(model_rows, history_rows) of 3 configurations that learn at different speeds."""
    history = []
    for index, params in enumerate(CONFIGS):
        for epoch in range(1, epochs + 1):
            gain = (index + 1) * epoch / 25
            history.append({"run_id": f"model_{index}_17961718{index:02d}", **params, "epoch": epoch,
                            **{f"{split}_loss": 0.9 - gain - 0.05 * (split == "train") for split in ("train", "val")},
                            **{f"{split}_accuracy": 0.55 + gain + 0.04 * (split == "train")
                               for split in ("train", "val")},
                            **{f"{split}_balanced_accuracy": 0.5 + gain + 0.03 * (split == "train")
                               for split in ("train", "val")},
                            "train_sitting_hits": 16.3, "val_sitting_windows": 33.7})
    models = [{**{key: value for key, value in row.items() if "_hits" not in key and "_windows" not in key},
               "epochs": epochs, "best_epoch": epochs} for row in history if row["epoch"] == epochs]
    for row in models:
        del row["epoch"]
    return models, history


def summary_for(models: list[dict], **extra) -> dict:
    return {"best_run_id": models[-1]["run_id"], "hyperparameters": CONFIGS[-1],
            "evaluation_metric": "val_balanced_accuracy", "value": models[-1]["val_balanced_accuracy"],
            "epochs": 3, "workers": 2, "search": "grid", "wall_clock_seconds": 3723.0, "resumes": [{"at": 1}],
            "sequences_per_epoch": {"1": {"train": 234, "val": 171}, "7": {"train": 30, "val": 20}},
            "data_store": "/tmp/s/pt", "best_model": "/tmp/s/r1/best_model.h5", "master": "local[2]", **extra}


def leaderboard_ids(page: str) -> list[str]:
    """Run ids in leaderboard order (the first table with class sortable)."""
    table = page.split('<table class="sortable">', 1)[1].split("</table>", 1)[0]
    return re.findall(r"<td>(model_[^<]+)</td>", table)


def read_csv(path: Path) -> list[dict]:
    """Rows of a results CSV with numbers as int or float, as write_report expects."""
    def number(text: str):
        for kind in (int, float):
            try:
                return kind(text)
            except ValueError:
                pass
        return text
    with open(path, newline="") as handle:
        return [{key: number(value) for key, value in row.items()} for row in csv.DictReader(handle)]


def test_report_is_one_self_contained_file(tmp_path):
    models, history = synthetic_rows()
    path = tmp_path / "report.html"
    write_report(path, summary_for(models), models, history, "balanced_accuracy", NAMES, larger_is_better=True)
    page = path.read_text()
    assert not re.search(r"""(src|href)\s*=\s*["']?\s*https?:""", page, re.IGNORECASE)
    assert page.count(IMAGE) == 2  # learning curves, hyper-parameters; no test section
    assert leaderboard_ids(page) == [row["run_id"] for row in reversed(models)]
    assert "1 h 02 min" in page and "local[2]" in page and "Test" not in page
    assert "sitting_hits" not in page and "sitting windows" not in page
    assert list(tmp_path.iterdir()) == [path]  # the .report.html.partial is gone


def test_test_section_adds_a_confusion_matrix(tmp_path):
    models, history = synthetic_rows()
    test = {"window": {"accuracy": 0.8, "balanced_accuracy": 0.78, "confusion_matrix": [[50, 10], [12, 40]]}}
    path = tmp_path / "report.html"
    write_report(path, summary_for(models, test=test), models, history, "balanced_accuracy", NAMES, True)
    page = path.read_text()
    assert page.count(IMAGE) == 3
    assert "<h2>Test</h2>" in page and "0.7800" in page


def test_loss_ranks_smallest_first_and_text_is_escaped(tmp_path):
    models, history = synthetic_rows()
    models[0]["val_loss"] = 0.01  # now the first configuration is best by loss
    path = tmp_path / "report.html"
    write_report(path, summary_for(models, note="<b>&"), models, history, "loss", NAMES, larger_is_better=False)
    page = path.read_text()
    assert leaderboard_ids(page) == [models[0]["run_id"], models[2]["run_id"], models[1]["run_id"]]
    assert "&lt;b&gt;&amp;" in page and "<b>&" not in page


def test_report_of_a_real_run(tmp_path):
    if not (REAL_RUN / "summary.json").is_file():
        pytest.skip(f"no finished run in {REAL_RUN} (set CHAP_MOP_REPORT_RUN to a results folder)")
    summary = json.loads((REAL_RUN / "summary.json").read_text())
    models = read_csv(REAL_RUN / "models.csv")
    path = tmp_path / "report.html"
    write_report(path, summary, models, read_csv(REAL_RUN / "history.csv"), summary["evaluation_metric"],
                 list(summary["hyperparameters"]), larger_is_better="loss" not in summary["evaluation_metric"])
    page = path.read_text()
    assert all(row["run_id"] in leaderboard_ids(page) for row in models)
    assert page.count(IMAGE) == 2 + ("test" in summary)
