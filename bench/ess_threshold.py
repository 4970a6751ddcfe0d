"""Where emphasis collapse starts: per-epoch `gr_ess` of runs that train well against runs that starve (CPU).

    uv run python bench/ess_threshold.py [--cifar-runs .data/cifar_runs] [--out bench/results/ess_threshold.json]

Trains GR on digits with 40% symmetric noise at the paper's settings (the CLI's defaults otherwise, warm-up off)
and reads the `metrics.csv` of the CIFAR budget runs kept by `bench/cifar_budget.py --keep`. For every run: the
final test accuracy against CE's on the same data, and the lowest and median per-epoch `gr_ess` (effective sample
size of the normalised weights, fraction of the batch, mean over an epoch's batches) once warm-up is over. The
collapse threshold (`fastgr.callback.ESS_COLLAPSE`) must lie between the two groups.
"""

from __future__ import annotations

import argparse
import csv
import json
import statistics
import tempfile
from pathlib import Path

import torch

from fastgr import TrainConfig, train_run
from fastgr.config import versions
from fastgr.files import write_text

DIGITS = {"digits CE": dict(loss="ce"), "digits GR lam 0.5, beta 8": dict(lam=0.5, beta=8.0),
          "digits GR lam 1, beta 16": dict(lam=1.0, beta=16.0), "digits GR lam 2, beta 12": dict(lam=2.0, beta=12.0)}


def after_warmup(metrics: Path, warmup: float, column: str = "gr_ess") -> list[float]:
    "Per-epoch values of a column for the epochs that ran entirely after the warm-up."
    rows = list(csv.DictReader(metrics.open()))
    n = len(rows)
    return [float(r[column]) for i, r in enumerate(rows) if r.get(column) and i / n >= warmup]


def record(s: dict, metrics: Path, warmup: float, steps: int) -> dict:
    return {"test_accuracy": s["test_accuracy_final"], "ess": after_warmup(metrics, warmup),
            "mean_p": after_warmup(metrics, warmup, "gr_mean_p"), "steps": steps, "seconds": s["seconds"]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cifar-runs", type=Path, default=Path(".data/cifar_runs"))
    ap.add_argument("--out", type=Path, default=Path("bench/results/ess_threshold.json"))
    ap.add_argument("--reuse-digits", action="store_true", help="take the digits runs from --out, train none")
    a = ap.parse_args()
    runs = {}
    if a.reuse_digits:
        runs = {k: {**v, "steps": 1437 // 128} for k, v in json.loads(a.out.read_text())["runs"].items()
                if k.startswith("digits")}
    with tempfile.TemporaryDirectory() as tmp:
        for name, kw in DIGITS.items() if not runs else ():
            folder = Path(tmp) / name.replace(" ", "_")
            runs[name] = record(train_run(TrainConfig(noise=0.4, warmup=0.0, **kw), folder), folder / "metrics.csv",
                                0.0, 1437 // 128)
            print(name, json.dumps(runs[name]), flush=True)
    for folder in sorted(a.cifar_runs.glob("*")):
        if (folder / "summary.json").exists():
            s = json.loads((folder / "summary.json").read_text())
            runs[f"cifar5k {folder.name}"] = record(s, folder / "metrics.csv", s.get("warmup") or 0.0, 5000 // 128)
    ce = {k.split()[0]: v["test_accuracy"] for k, v in runs.items() if k.endswith(" CE") or k.endswith(" ce")}
    write_text(a.out, json.dumps({"meta": {"threads": torch.get_num_threads(), "versions": versions()},
                                  "runs": runs}, indent=1) + "\n")
    from fastgr import collapsed_epochs

    print("| run | test acc | CE's test acc | epoch gr_ess: lowest / median | epoch gr_mean_p: lowest / median | "
          "collapse epochs (current rule) |\n|---|---|---|---|---|---|")
    for k, v in runs.items():
        if v["ess"]:
            n = len(collapsed_epochs([(e, p, v["steps"]) for e, p in zip(v["ess"], v["mean_p"])], 10))
            print(f"| {k} | {v['test_accuracy']:.3f} | {ce.get(k.split()[0], float('nan')):.3f} | "
                  f"{min(v['ess']):.3f} / {statistics.median(v['ess']):.3f} | "
                  f"{min(v['mean_p']):.3f} / {statistics.median(v['mean_p']):.3f} | {n} of {len(v['ess'])} |")


if __name__ == "__main__":
    main()
