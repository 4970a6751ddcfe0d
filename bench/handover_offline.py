r"""When would the automatic setting's rule have handed over, read on cross-entropy runs' curves.

    uv run python bench/handover_offline.py

Up to its handover an `--auto` run is a cross-entropy run, so a rule can be read on the per-epoch signals
(`noise_cl`, `memorised`, `train_acc_given`) that bench/budget_sweep.py keeps for every cell, here the CE and
`--auto` cells of bench/results/budget_sweep.json, bench/results/signal_trace_reruns.json, bench/results/
auto_first_rule.json (the first rule's `--auto` cells: memorising alone) and bench/results/auto_variant_x12.json
(the `--auto` cells of a variant of that rule, set aside) that have them; an `--auto` cell is
read up to its handover (`ce_epochs`: the epochs it trained with cross-entropy alone). For each: the epoch
(1-based) after which `fastgr.handover.handover_due` would decide, for the rule and the variant (`RULES`), and the
first candidate rule ("the fit of the given labels reaches 1 - noise_cl of the least-memorising epoch"), with each
epoch's fit, `noise_cl` and `memorised`. The count behind each `memorised` share (its Wilson bounds' n) is not in
the curves: it is taken as `noise_cl` of the epoch before times the training examples, the size of the confident
disagreements it is a share of (cleanlab's calibration rescales the rows, so this is an approximation, and a run
may decide an epoch or two from what is read here). Where the run folder kept bench/signal_trace.py's traces
(`runs/sweep/CASE/EPOCHS/COLUMN/trace`; `runs/sweep_x12/...` for the variant's cells), `wrong_label_fit` is
each epoch's share of the truly wrong labels that the network predicted as given: when memorising actually began;
and `gr_ess`, GR's effective sample size over the whole run (after the handover too) from its metrics.csv.
Results: bench/results/handover_offline.json.

`peaks` tests another signal on the same cells, a held-out split of the given labels (hand over once its accuracy
stops rising): for every cross-entropy cell of bench/results/budget_sweep.json, the epoch of its best test
accuracy, against its final, beside GR's best column of the row. With symmetric noise, independent of the image, a
held-out split's accuracy on its given labels is (1 - r) acc + r (1 - acc) / (C - 1) in expectation, rising with
the test accuracy acc for r < (C - 1) / C: it peaks where the test accuracy does (pairflip's is not a function of acc
alone).
"""

from __future__ import annotations

import json
from pathlib import Path

from fastgr.files import write_text
from fastgr.handover import HANDOVER_EPOCHS, HANDOVER_FACTOR, EpochSignals, handover_due

RUNS = Path("runs/sweep")  # bench/budget_sweep.py's --keep folder
# each results file, and where its run folders (and traces) were kept; the last: the variant set aside's cells
SOURCES = {Path("bench/results/budget_sweep.json"): RUNS, Path("bench/results/signal_trace_reruns.json"): RUNS,
           Path("bench/results/auto_first_rule.json"): RUNS,  # the `--auto` cells of the first rule, moved there
           Path("bench/results/auto_variant_x12.json"): Path("runs/sweep_x12")}
# the rule (fastgr.handover.HANDOVER_FACTOR, HANDOVER_EPOCHS: doubled, in one epoch), and the variant tried
RULES = {"x2.0 in 1": (HANDOVER_FACTOR, HANDOVER_EPOCHS), "x1.2 in 2": (1.2, 2)}
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


def gr_ess(run: Path) -> list[float] | None:
    "GR's effective sample size, every epoch of the whole run (after its handover too), where the folder was kept."
    import pandas as pd

    m = pd.read_csv(run / "metrics.csv") if (run / "metrics.csv").is_file() else None
    return None if m is None or "gr_ess" not in m else [round(float(v), 4) for v in m["gr_ess"]]


def read(key: str, cell: dict, run: Path) -> dict | None:
    c = cell.get("curves", {})
    if "memorised" not in c or "noise_cl" not in c:
        return None
    n = next(v for k, v in N_TRAIN.items() if key.startswith(k))
    share = c.get("gr_share") or [0] * len(c["test_acc"])
    ce = next((i for i, v in enumerate(share) if v), len(share))  # epochs 1..ce trained with cross-entropy alone
    fit, noise, mem = c["train_acc_given"][:ce], c["noise_cl"][:ce], c["memorised"][:ce]
    due = {}
    for name, (factor, epochs) in RULES.items():
        history, due[name] = [], None
        for t in range(len(fit)):
            base = round(noise[t - 1] * n) if t and noise[t - 1] is not None else 0
            history.append(EpochSignals(mem[t], base, noise[t]))
            if handover_due(history, factor, epochs) is not None:
                due[name] = t + 1
                break
    wrong = wrong_label_fit(run)
    return {"gr_ess": gr_ess(run), "ce_epochs": ce, "of_epochs": len(share), "handover_due_epoch": due,
            "first_candidate_epoch": first_candidate(fit, noise, mem), "test_acc": c["test_acc"][:ce],
            "train_acc_given": fit, "noise_cl": noise, "memorised": mem,
            "wrong_label_fit": None if wrong is None else wrong[:ce], "cpu": cell.get("cpu")}


def peaks(rows: dict) -> dict:
    "Each cross-entropy cell's epoch of best test accuracy, its best and final, and the best GR column's final."
    out = {}
    for key, cell in rows.items():
        row, column = key.rsplit("/", 1)
        if column != "ce":
            continue
        acc = cell["curves"]["test_acc"]
        gr = {k.rsplit("/", 1)[1]: v["test_accuracy_final"] for k, v in rows.items()
              if k.rsplit("/", 1)[0] == row and k.rsplit("/", 1)[1] not in ("ce", "ls", "gce", "sce", "mixup")}
        best_gr = max(gr, key=gr.get) if gr else None
        out[row] = {"peak_epoch": acc.index(max(acc)) + 1, "of_epochs": len(acc), "best": max(acc), "final": acc[-1],
                    "best_gr_column": best_gr, "best_gr_final": gr.get(best_gr)}
    return out


def main() -> None:
    out = {"note": __doc__.split("\n\n")[2].replace("\n", " "), "rows": {},
           "peaks_note": __doc__.split("\n\n")[3].replace("\n", " ")}
    for src, runs in SOURCES.items():
        rows = json.loads(src.read_text())["rows"] if src.exists() else {}
        for key, cell in rows.items():
            if key.split("/")[2] in ("ce", "auto") and (r := read(key, cell, runs / key)) is not None:
                out["rows"][f"{src.stem}:{key}"] = r
                print(f"{src.stem}:{key}: cross-entropy for {r['ce_epochs']} of {r['of_epochs']} epochs; the rule "
                      f"at epoch {r['handover_due_epoch']}, the first candidate at {r['first_candidate_epoch']}")
    out["peaks"] = peaks(json.loads(next(iter(SOURCES)).read_text())["rows"])
    for row, r in out["peaks"].items():
        print(f"{row}: CE's test accuracy peaks at epoch {r['peak_epoch']} of {r['of_epochs']} ({r['best']:.3f}, "
              f"final {r['final']:.3f}); GR's best column {r['best_gr_column']} {r['best_gr_final']}")
    write_text(OUT, json.dumps(out, indent=1) + "\n")


if __name__ == "__main__":
    main()
