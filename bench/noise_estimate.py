r"""The noise-rate estimate of `fastgr issues`, old and new, on every kept run whose true labels are known.

    uv run python bench/noise_estimate.py

For each run folder kept by bench/budget_sweep.py and bench/signal_trace.py (`runs/sweep/CASE/EPOCHS/COLUMN`, and
`runs/sweep_x12/...` for the `--auto` variant's cells) and by bench/label_issues.py (`runs/issues/CASE/gr|ce`, the
runs of its head-to-head; `runs/issues_e30/...`, two of its GR parts trained at 30 epochs) with a label_issues.csv
(true labels from its labels.csv, clean runs included): the true share of wrong labels, the
estimate before `fastgr.issues.flag_cut` (the share with AUM < 0) and with it (AUM below the cut: 0, or lower where
a two-component Gaussian mixture on the margins puts the boundary between its components), the cut, and the
flagged set's precision and recall for each, beside the run's test accuracy and what it trained with. The margins
are those the runs recorded (label_issues.csv's `aum`), so the new estimate is computed from the same numbers a run
finishing today would use. Results: bench/results/noise_estimate.json.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pandas as pd

from fastgr.files import write_text
from fastgr.issues import estimated_noise_rate, flag_cut

sys.path.insert(0, str(Path(__file__).parent))
from label_issues import flagged_stats  # noqa: E402  (bench/ is not a package)

# where runs were kept -> the pattern of a run folder under it
FOLDERS = {Path("runs/sweep"): "*/*/*", Path("runs/sweep_x12"): "*/*/*", Path("runs/issues"): "*/*",
           Path("runs/issues_e30"): "*/*"}  # the last: label_issues' GR part at the CIFAR protocol's 30 epochs
OUT = Path("bench/results/noise_estimate.json")


def score(run: Path) -> dict:
    f = pd.read_csv(run / "label_issues.csv").sort_values("index")
    labels = pd.read_csv(run / "labels.csv", dtype={"true_label": str, "given_label": str}, keep_default_na=False)
    aum = f["aum"].to_numpy(np.float64)
    wrong = (labels["true_label"] != labels["given_label"]).to_numpy(bool)[f["index"].to_numpy()]
    margin = np.nan_to_num(aum, nan=0.0)
    result = json.loads((run / "result.json").read_text()) if (run / "result.json").is_file() else {}
    config = json.loads((run / "config.json").read_text())
    return {"true_noise_rate": round(float(wrong.mean()), 4), "aum_below_0": flagged_stats(margin < 0, wrong),
            "flag_cut": round(flag_cut(aum), 4), "mixture": flagged_stats(margin < flag_cut(aum), wrong),
            "estimated_noise_rate": round(estimated_noise_rate(aum), 4),
            "test_accuracy_final": result.get("test_accuracy_final"),
            "train_accuracy_given": result.get("train_accuracy_given"), "cpu": config["versions"].get("cpu")}


def main() -> None:
    out = {"note": __doc__.split("\n\n")[1].replace("\n", " "), "rows": {}}
    for root, pattern in FOLDERS.items():
        for issues in sorted(root.glob(f"{pattern}/label_issues.csv")):
            run = issues.parent
            if "true_label" not in pd.read_csv(run / "labels.csv", nrows=1):  # the truth is not known
                continue
            key = f"{root.name}:{run.relative_to(root)}"
            out["rows"][key] = r = score(run)
            print(f"{key}: truth {r['true_noise_rate']:.3f}, AUM < 0 {r['aum_below_0']['estimated_noise_rate']:.3f} "
                  f"(precision {r['aum_below_0']['precision']}), with the cut {r['flag_cut']:+.2f}: "
                  f"{r['mixture']['estimated_noise_rate']:.3f} (precision {r['mixture']['precision']})")
    write_text(OUT, json.dumps(out, indent=1) + "\n")


if __name__ == "__main__":
    main()
