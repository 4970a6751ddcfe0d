r"""Can a run tell clean labels from noisy ones before GR must start? Signals read at matched confidence.

    uv run python bench/matched_confidence.py

GR's default must hand the strong emphasis to a long noisy run early (CIFAR-5k 40% at 120 epochs: from the first
step it ends 21 points above CE, from epoch 48 only 18) and keep it from a clean run from scratch (clean CIFAR-5k at
40 epochs: 7.6 points below CE from the first step). This script reads, on the cross-entropy part of every run
traced by bench/signal_trace.py, what a rule could go by at the first epoch where the network reaches a given
confidence (the mean probability of its predicted class, 0 for a uniform guess, 1 for certainty; read without any
label): the training's progress there, the signals every run records (`noise_cl`, `memorised`, the fit of the
given labels: metrics.csv), the share of each predicted class's most confident tenth whose given label disagrees
(`top_disagree`, a noise estimate that trusts only the network's surest predictions), and what no rule can read:
the test accuracy and the share of truly wrong labels fitted (`wrong_fit`). An `--auto` run is read up to its
handover, where it is a cross-entropy run. Results: bench/results/matched_confidence.json, with each row's final
test accuracy under CE, GR 0.5/8 and GR 1/16/0.5 from bench/results/budget_sweep.json.
"""

from __future__ import annotations

import csv
import json
import sys
from pathlib import Path

import numpy as np

from fastgr.files import write_text

sys.path.insert(0, str(Path(__file__).parent))
from margin_modes import confidence  # noqa: E402  (bench/ is not a package)

OUT = Path("bench/results/matched_confidence.json")
LEVELS = (0.2, 0.3, 0.4, 0.5)
TOP = 0.1  # each predicted class's most confident tenth
# run folder -> (budget_sweep row, the epochs it trained with cross-entropy alone)
RUNS = {
    "runs/sweep/cifar5k_clean/40/ce": ("cifar5k_clean/40", 40),
    "runs/sweep/cifar5k_clean/120/ce": ("cifar5k_clean/120", 120),
    "runs/sweep/cifar5k_sym40/10/auto": ("cifar5k_sym40/10", 10),
    "runs/sweep/cifar5k_sym40/120/auto": ("cifar5k_sym40/120", 67),
    "runs/sweep/digits40/30/ce": ("digits40/30", 30),
    "runs/sweep/digits_clean/30/ce": ("digits_clean/30", 30),
    "runs/sweep/digits_pair30/30/auto": ("digits_pair30/30", 30),
    "runs/sweep/ft_sym40/10/auto": ("ft_sym40/10", 10),
}
COLUMNS = {"ce": "CE", "gr": "GR 0.5/8", "gr116": "GR 1/16/0.5"}


def labels(run: Path) -> tuple[np.ndarray, np.ndarray]:
    "(given class index, truly wrong) per training example; class indices in the sorted order of the names."
    with open(run / "labels.csv") as f:
        rows = list(csv.DictReader(f))
    vocab = {v: i for i, v in enumerate(sorted({r["given_label"] for r in rows}))}
    given = np.array([vocab[r["given_label"]] for r in rows])
    return given, np.array([r["flipped"] == "1" for r in rows])


def read_epoch(trace: Path, given: np.ndarray, wrong: np.ndarray, classes: int) -> dict:
    "One traced epoch: its confidence, `top_disagree` and the share of the truly wrong labels fitted."
    z = np.load(trace)
    pred, pp = z["pred"], z["p_pred"].astype(np.float64)
    seen = pred >= 0
    top, dis = 0, 0
    for c in range(classes):
        m = np.flatnonzero(seen & (pred == c))
        if len(m):
            k = max(1, int(TOP * len(m)))
            sure = m[np.argsort(-pp[m], kind="stable")[:k]]
            top, dis = top + k, dis + int((given[sure] != c).sum())
    fitted = seen & (pred == given)
    return {"confidence": confidence(trace, classes), "top_disagree": dis / top,
            "wrong_fit": float(fitted[wrong].mean()) if wrong.any() else None}


def main() -> None:
    cells = json.loads(Path("bench/results/budget_sweep.json").read_text())["rows"]
    out = {"note": " ".join(__doc__.split("\n\n")[2:3]).replace("\n", " "), "levels": LEVELS, "runs": {}}
    for folder, (row, ce_epochs) in RUNS.items():
        run = Path(folder)
        if not (run / "trace").is_dir():
            print(f"{run}: no traces, skipped")
            continue
        given, wrong = labels(run)
        classes = int(given.max()) + 1
        with open(run / "metrics.csv") as f:
            metrics = {int(r["epoch"]): r for r in csv.DictReader(f)}
        total = len(metrics)  # every epoch of the training, a fine-tune's head epoch included
        epochs = []
        for e in range(1, min(ce_epochs, total) + 1):
            trace = run / "trace" / f"epoch_{e:03d}.npz"
            m = metrics[e]
            num = {k: (float(m[k]) if m.get(k) not in (None, "") else None)
                   for k in ("test_acc", "train_acc_given", "noise_cl", "memorised")}
            epochs.append({"epoch": e, "progress": e / total, **num, **read_epoch(trace, given, wrong, classes)})
        at = {}
        for level in LEVELS:
            hit = next((x for x in epochs if x["confidence"] >= level), None)
            at[str(level)] = None if hit is None else {k: (round(v, 4) if isinstance(v, float) else v)
                                                      for k, v in hit.items()}
        outcome = {name: cells[f"{row}/{col}"]["test_accuracy_final"] for col, name in COLUMNS.items()
                   if f"{row}/{col}" in cells}
        out["runs"][folder] = {"row": row, "epochs": total, "noise": round(float(wrong.mean()), 4),
                               "final": outcome, "at_confidence": at}
        print(f"{row:20s} noise {wrong.mean():.2f}  " + "  ".join(
            f"{lv}: " + ("-" if x is None else f"e{x['epoch']} ({x['progress']:.2f}) cl {x['noise_cl']:.2f} "
                         f"top {x['top_disagree']:.2f} fit {x['train_acc_given']:.2f} wrong {x['wrong_fit'] or 0:.2f} "
                         f"test {x['test_acc']:.2f}") for lv, x in at.items()))
    write_text(OUT, json.dumps(out, indent=1) + "\n")


if __name__ == "__main__":
    main()
