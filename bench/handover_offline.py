r"""When would the automatic setting's rule have handed over, read on cross-entropy runs' curves.

    uv run python bench/handover_offline.py

Up to its handover an `--auto` run is a cross-entropy run, so a rule can be read on the per-epoch signals
(`noise_cl`, `memorised`, `train_acc_given`) that bench/budget_sweep.py keeps for every cell, here the CE cells of
bench/results/budget_sweep.json and bench/results/signal_trace_reruns.json that have them. For each: the epoch
(1-based) after which `fastgr.handover.handover_due` would decide, and the epoch of the first candidate rule ("the
fit of the given labels reaches 1 - noise_cl of the least-memorising epoch"), with each epoch's fit, `noise_cl` and
`memorised`. The count behind each `memorised` share (its Wilson bounds' n) is not in the curves: it is taken as
`noise_cl` of the epoch before times the training examples, the size of the confident disagreements it is a share
of (cleanlab's calibration rescales the rows, so this is an approximation). An `--auto` cell that never handed over
(`gr_share` 0 throughout) is a cross-entropy run too and is read alike. Where the run folder kept bench/
signal_trace.py's traces (`runs/sweep/CASE/EPOCHS/COLUMN/trace`), `wrong_label_fit` is each epoch's share of the
truly wrong labels that the network predicted as given: when memorising actually began. Results: bench/results/
handover_offline.json.
"""

from __future__ import annotations

import json
from pathlib import Path

from fastgr.files import write_text
from fastgr.handover import EpochSignals, handover_due

RUNS = Path("runs/sweep")  # bench/budget_sweep.py's --keep folder
SOURCES = (Path("bench/results/budget_sweep.json"), Path("bench/results/signal_trace_reruns.json"))
OUT = Path("bench/results/handover_offline.json")
N_TRAIN = {"digits": 1437, "cifar5k": 5000, "ft": 5000, "c10n": 5000}


def first_candidate(fit: list[float], noise: list[float | None], memorised: list[float | None]) -> int | None:
    "The rule tried first: due once the fit reaches 1 - noise_cl of the least-memorising epoch so far."
    for t in range(len(fit)):
        seen = [(memorised[i], -i, noise[i]) for i in range(t + 1) if memorised[i] is not None and noise[i] is not None]
        if seen and fit[t] >= 1 - min(seen)[2]:
            return t + 1
    return None


def wrong_label_fit(run: Path) -> list[float] | None:
    "Per epoch, the share of the truly wrong training labels predicted as given (from the run's traces)."
    import numpy as np
    import pandas as pd

    traces = sorted((run / "trace").glob("epoch_*.npz"))
    if not traces or not (run / "labels.csv").is_file():
        return None
    labels = pd.read_csv(run / "labels.csv", dtype={"true_label": str, "given_label": str})
    classes = {c: i for i, c in enumerate(json.loads((run / "labels.csv.json").read_text())["classes"])}
    given, true = labels["given_label"].map(classes).to_numpy(), labels["true_label"].map(classes).to_numpy()
    wrong = given != true
    out = []
    for f in traces:
        pred = np.load(f)["pred"]
        seen = wrong & (pred >= 0)
        out.append(round(float((pred[seen] == given[seen]).mean()), 4) if seen.any() else None)
    return out


def read(key: str, cell: dict) -> dict | None:
    c = cell.get("curves", {})
    if "memorised" not in c or "noise_cl" not in c:
        return None
    n = next(v for k, v in N_TRAIN.items() if key.startswith(k))
    fit, noise, mem = c["train_acc_given"], c["noise_cl"], c["memorised"]
    history, due = [], None
    for t in range(len(fit)):
        base = round(noise[t - 1] * n) if t and noise[t - 1] is not None else 0
        history.append(EpochSignals(mem[t], base, noise[t]))
        if due is None and handover_due(history) is not None:
            due = t + 1
    return {"handover_due_epoch": due, "first_candidate_epoch": first_candidate(fit, noise, mem),
            "test_acc": c["test_acc"], "train_acc_given": fit, "noise_cl": noise, "memorised": mem,
            "wrong_label_fit": wrong_label_fit(RUNS / key), "cpu": cell.get("cpu")}


def main() -> None:
    out = {"note": __doc__.split("\n\n")[2].replace("\n", " "), "rows": {}}
    for src in SOURCES:
        rows = json.loads(src.read_text())["rows"] if src.exists() else {}
        for key, cell in rows.items():
            column, share = key.split("/")[2], cell.get("curves", {}).get("gr_share") or [1]
            if (column == "ce" or column == "auto" and not any(share)) and (r := read(key, cell)) is not None:
                out["rows"][f"{src.stem}:{key}"] = r
                print(f"{src.stem}:{key}: rule at epoch {r['handover_due_epoch']}, first candidate at "
                      f"{r['first_candidate_epoch']} of {len(r['test_acc'])}")
    write_text(OUT, json.dumps(out, indent=1) + "\n")


if __name__ == "__main__":
    main()
