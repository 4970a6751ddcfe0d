r"""The noise-rate estimate of `fastgr issues`, old and new, on every kept run whose true labels are known.

    uv run python bench/noise_estimate.py
    uv run --group bench python bench/noise_estimate.py --confident-joint    # and cleanlab's estimate beside it

For each run folder kept by bench/budget_sweep.py and bench/signal_trace.py (`runs/sweep/CASE/EPOCHS/COLUMN`, and
`runs/sweep_x12/...` for the `--auto` variant's cells) and by bench/label_issues.py (`runs/issues/CASE/gr|ce`, the
runs of its head-to-head; `runs/issues_e30/...`, two of its GR parts trained at 30 epochs) with a label_issues.csv
(true labels from its labels.csv, clean runs included): the true share of wrong labels, the
estimate before `fastgr.issues.flag_cut` (the share with AUM < 0) and with it (AUM below the cut: 0, or lower where
a two-component Gaussian mixture on the margins puts the boundary between its components), the cut, and the
flagged set's precision and recall for each, beside the run's test accuracy and what it trained with. The margins
are those the runs recorded (label_issues.csv's `aum`), so the new estimate is computed from the same numbers a run
finishing today would use. Results: bench/results/noise_estimate.json.

With `--confident-joint`, also cleanlab's estimate on the same run: the confident joint (`cleanlab.count.
estimate_joint`, its off-diagonal mass) of the run's own final probabilities on its unaugmented training images (the
exported learner's, as `fastgr issues` reads them; cached as RUN/train_probs.npy), and the precision and recall of
the set `cleanlab.filter.find_label_issues` flags from them. In-sample probabilities, not cleanlab's out-of-sample
folds: the candidate the label-issue issue names ("cleanlab's confident joint on the run's own late probabilities").
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


def train_probs(run: Path) -> np.ndarray:
    "(N, C) the run's final model's probabilities on its training images, unaugmented (cached in the run folder)."
    cache = run / "train_probs.npy"
    if not cache.is_file():
        from fastgr.data import load_data
        from fastgr.prediction import predict_with_learner
        from fastgr.runs import RunFolder

        cfg = RunFolder(run).read_record().config
        data = load_data(cfg.data, cfg.img_size, cfg.valid_pct, cfg.seed, cfg.classes, cfg.in_memory)
        tmp = cache.with_name("train_probs.part.npy")  # written whole, then renamed: a cut run leaves no half cache
        np.save(tmp, predict_with_learner(run / "learner.pkl", data, "cpu").numpy())
        tmp.replace(cache)
    probs = np.load(cache).astype(np.float64)
    return probs / probs.sum(1, keepdims=True)


def confident_joint(run: Path, given: np.ndarray, wrong: np.ndarray) -> dict:
    "cleanlab's noise estimate (the confident joint's off-diagonal mass) and flagged set, on the run's probabilities."
    from cleanlab.count import estimate_joint
    from cleanlab.filter import find_label_issues

    probs = train_probs(run)
    flagged = find_label_issues(given, probs)
    return {"estimated_noise_rate": round(float(1 - np.trace(estimate_joint(given, probs))), 4),
            "flagged": flagged_stats(flagged, wrong)}


def score(run: Path, with_cj: bool = False) -> dict:
    f = pd.read_csv(run / "label_issues.csv").sort_values("index")
    labels = pd.read_csv(run / "labels.csv", dtype={"true_label": str, "given_label": str}, keep_default_na=False)
    aum = f["aum"].to_numpy(np.float64)
    wrong = (labels["true_label"] != labels["given_label"]).to_numpy(bool)[f["index"].to_numpy()]
    margin = np.nan_to_num(aum, nan=0.0)
    result = json.loads((run / "result.json").read_text()) if (run / "result.json").is_file() else {}
    config = json.loads((run / "config.json").read_text())
    extra = {}
    if with_cj:  # labels in dataset index order, as the training images are predicted
        from fastgr.noise import load_labels
        from fastgr.runs import RunFolder

        noisy, _, _ = load_labels(run / "labels.csv", RunFolder(run).read_record().data.classes)
        given = np.asarray(noisy.given)
        extra["confident_joint"] = confident_joint(run, given, given != np.asarray(noisy.true))
    return {**extra, "true_noise_rate": round(float(wrong.mean()), 4), "aum_below_0": flagged_stats(margin < 0, wrong),
            "flag_cut": round(flag_cut(aum), 4), "mixture": flagged_stats(margin < flag_cut(aum), wrong),
            "estimated_noise_rate": round(estimated_noise_rate(aum), 4),
            "test_accuracy_final": result.get("test_accuracy_final"),
            "train_accuracy_given": result.get("train_accuracy_given"), "cpu": config["versions"].get("cpu")}


def main(with_cj: bool = False) -> None:
    out = {"note": " ".join(__doc__.split("\n\n")[1:3 if with_cj else 2]).replace("\n", " "), "rows": {}}
    for root, pattern in FOLDERS.items():
        for issues in sorted(root.glob(f"{pattern}/label_issues.csv")):
            run = issues.parent
            if "true_label" not in pd.read_csv(run / "labels.csv", nrows=1):  # the truth is not known
                continue
            key = f"{root.name}:{run.relative_to(root)}"
            out["rows"][key] = r = score(run, with_cj)
            print(f"{key}: truth {r['true_noise_rate']:.3f}, AUM < 0 {r['aum_below_0']['estimated_noise_rate']:.3f} "
                  f"(precision {r['aum_below_0']['precision']}), with the cut {r['flag_cut']:+.2f}: "
                  f"{r['mixture']['estimated_noise_rate']:.3f} (precision {r['mixture']['precision']})" +
                  (f"; confident joint {r['confident_joint']['estimated_noise_rate']:.3f}" if with_cj else ""),
                  flush=True)
    write_text(OUT, json.dumps(out, indent=1) + "\n")


if __name__ == "__main__":
    main(with_cj="--confident-joint" in sys.argv[1:])
