r"""Does the tuner's rule (accuracy on held-out *noisy* labels) rank settings as clean test accuracy does?

    uv run python bench/tune_agreement.py runs/sweep/digits40/30 ...    # rows of bench/budget_sweep.py, kept
    uv run python bench/tune_agreement.py --rule     # every column of every row of bench/results/budget_sweep.json

A row folder of the budget sweep (`--keep`) holds a `--tune` run and the full-data runs of the columns. The tuner
scored each candidate of its grid on 20% of the noisy training labels after training on the other 80% (`tune.csv`);
the columns trained the same candidates on all of the data and were scored on the clean test set: cross-entropy
(`ce`), GR's defaults 0.5/8/0 (`gr`) and the preset 1/16/0.5 (`preset`). Reported per row: the two scores of each
candidate both have, Kendall's tau between them, whether the tuner's choice was the best on the clean test set, and
how far short of the best column it fell. Results go to bench/results/tune_agreement.json.

`--rule` asks the same of every run of the results table, tuned or not, at no training cost: each column's test
predictions (its confusion counts, stored by budget_sweep.py) are scored against the labels the row's noise would
give the test images, in expectation: sum over test images of T[true, predicted] / n, where T is the row's
class-conditional transition as realised in its training labels (exact for symmetric and pairflip noise; for
CIFAR-10N's human noise, which depends on the image and not only its class, an approximation). Reported per row:
both accuracies of each column, Kendall's tau, whether the column the rule ranks first is the best on the clean test
set, and by how much it falls short. Results go to bench/results/rule_agreement.json.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import pandas as pd
from scipy.stats import kendalltau

from fastgr.config import TrainConfig
from fastgr.files import write_text
from fastgr.tuning import noisy_label_accuracy

OUT = Path("bench/results/tune_agreement.json")
RULE_OUT = Path("bench/results/rule_agreement.json")
SWEEP = Path("bench/results/budget_sweep.json")
HOLDOUT = TrainConfig.__dataclass_fields__["tune_holdout"].default  # the tuner's held-out fraction


# a candidate's column folders: lam 1 / beta 16 / warm-up 0.5 is `--preset` at 40% noise, and `gr116` given by hand
COLUMN = {("ce", None, None, None): ("ce",), ("gce", None, None, None): ("gce",), ("sce", None, None, None): ("sce",),
          ("gr", 0.5, 8.0, 0.0): ("gr",), ("gr", 1.0, 16.0, 0.5): ("preset", "gr116")}


def agreement(row: Path) -> dict:
    table = pd.read_csv(row / "tune" / "tune.csv")
    if "loss" not in table:  # a grid from before cross-entropy joined it
        table["loss"] = "gr"
    names, noisy, clean = [], [], []
    for _, r in table.iterrows():
        key = (r["loss"],) + ((None,) * 3 if r["loss"] != "gr" else (r["lam"], r["beta"], r["warmup"]))
        col = next((c for c in COLUMN.get(key, ()) if (row / c / "summary.json").exists()), None)
        if col:
            names.append(col)
            noisy.append(float(r["holdout_acc_noisy"]))
            clean.append(json.loads((row / col / "summary.json").read_text())["test_accuracy_final"])
    tuned = json.loads((row / "tune" / "summary.json").read_text())["test_accuracy_final"]
    best = max([*clean, tuned])
    chosen = names[noisy.index(max(noisy))] if noisy else None
    return {"row": str(row), "candidates": names, "holdout_acc_noisy": [round(v, 4) for v in noisy],
            "clean_test": [round(v, 4) for v in clean],
            "kendall_tau": float(kendalltau(noisy, clean).statistic) if len(names) > 2 else None,
            "chosen": chosen, "tuned_run_clean_test": round(tuned, 4), "best_clean_test": round(best, 4),
            "chosen_is_best_clean": tuned >= best - 1e-9, "shortfall": round(best - tuned, 4)}


def rule_agreement(rows: dict) -> list[dict]:
    "Per row of the results table (`CASE/EPOCHS`), the rule's scores of its columns against their clean accuracy."
    out = []
    for key in sorted({k.rsplit("/", 1)[0] for k in rows}):
        names, noisy, clean, seen = [], [], [], {}
        for col in (k.rsplit("/", 1)[1] for k in rows if k.rsplit("/", 1)[0] == key):
            r = rows[f"{key}/{col}"]
            if "test_confusion" not in r:
                continue
            conf = np.array(r["test_confusion"])
            if conf.tobytes() in seen:  # the same training under two names (e.g. GR's defaults and 1/16/0.5)
                names[seen[conf.tobytes()]] += f"={col}"
                continue
            seen[conf.tobytes()] = len(names)
            names.append(col)
            noisy.append(noisy_label_accuracy(conf, r["label_transition"]))
            clean.append(float(np.trace(conf) / conf.sum()))
        if len(names) < 2:
            continue
        pick, best = int(np.argmax(noisy)), max(clean)
        # how far the rule's first column leads, against the spread of one accuracy on the tuner's held-out part
        # (`TrainConfig.tune_holdout` of the training labels): a lead within it is a coin toss for a tuner
        n_hold = round(HOLDOUT * np.array(rows[f"{key}/{names[pick].split('=')[0]}"]["label_transition"]).sum())
        q, sd = noisy[pick], float(np.sqrt(noisy[pick] * (1 - noisy[pick]) / n_hold))
        out.append({"row": key, "columns": names, "noisy_test_expected": [round(v, 4) for v in noisy],
                    "clean_test": [round(v, 4) for v in clean], "n_test": int(conf.sum()),
                    "lead": round(q - sorted(noisy)[-2], 4), "holdout_sd": round(sd, 4),
                    "kendall_tau": float(kendalltau(noisy, clean).statistic) if len(names) > 2 else None,
                    "rule_picks": names[pick], "best_clean": names[int(np.argmax(clean))],
                    "pick_is_best_clean": clean[pick] >= best - 1e-9, "shortfall": round(best - clean[pick], 4)})
    return out


def report_rule() -> None:
    rows = rule_agreement(json.loads(SWEEP.read_text())["rows"])
    write_text(RULE_OUT, json.dumps(rows, indent=1) + "\n")
    for r in rows:
        tau = "-" if r["kendall_tau"] is None else f"{r['kendall_tau']:.2f}"
        verdict = "the best" if r["pick_is_best_clean"] else f"short of the best ({r['best_clean']}) by " \
                                                            f"{r['shortfall']:.3f}"
        print(f"{r['row']}: Kendall tau {tau} over {len(r['columns'])}; the rule picks {r['rule_picks']}, {verdict}; "
              f"its lead {r['lead']:.3f} (one held-out accuracy's sd {r['holdout_sd']:.3f})")
        for n, h, c in sorted(zip(r["columns"], r["noisy_test_expected"], r["clean_test"]), key=lambda t: -t[2]):
            print(f"    {n:12s} noisy test (expected) {h:.3f}  clean test {c:.3f}")
    agree = sum(r["pick_is_best_clean"] for r in rows)
    print(f"the rule's first column was the clean test's best in {agree} of {len(rows)} rows")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("runs", type=Path, nargs="*", help="row folders: CASE/EPOCHS of a kept budget sweep")
    ap.add_argument("--rule", action="store_true", help="score every column of the results table (no tuning run)")
    a = ap.parse_args()
    if a.rule:
        return report_rule()
    rows = [agreement(r) for r in a.runs if (r / "tune" / "tune.csv").exists()]
    # rows measured earlier (their run folders may be gone) stay; a row measured again is replaced
    new = {r["row"] for r in rows}
    kept = [r for r in (json.loads(OUT.read_text()) if OUT.exists() else []) if r["row"] not in new]
    write_text(OUT, json.dumps(kept + rows, indent=1) + "\n")
    for r in rows:
        tau = "-" if r["kendall_tau"] is None else f"{r['kendall_tau']:.2f}"
        verdict = "the best" if r["chosen_is_best_clean"] else f"short of the best by {r['shortfall']:.3f}"
        print(f"{r['row']}: Kendall tau {tau}; chose {r['chosen']}, {verdict} on the clean test")
        for n, h, c in zip(r["candidates"], r["holdout_acc_noisy"], r["clean_test"]):
            print(f"    {n:8s} held-out noisy {h:.3f}  clean test {c:.3f}")


if __name__ == "__main__":
    main()
