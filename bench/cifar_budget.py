"""GR on a short CPU budget: the emphasis-collapse table, reproduced with fastgr's own code.

    python3 ../shared/tools/unpack_cifar10.py .data/cifar5k --train 500 --test 100
    uv run python bench/cifar_budget.py [--data .data/cifar5k] [--rows ce gr_1_16 ...]

A stratified 5,000-image CIFAR-10 subset (500 per class; test 100 per class), 40% symmetric noise, CIFAR
ResNet-20, pad-crop-flip augmentation, SGD one-cycle (max lr 0.1, momentum 0.9, L2 5e-4), batch 128, 40 epochs:
the protocol of the issue that measured GR lam 1 / beta 16 collapsing (0.227 test accuracy against CE's 0.541).
Each row is one `train_run` (what `fastgr train` does); results are merged into bench/results/cifar_budget.json
as rows finish, and a Markdown table is printed.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import torch

from fastgr import RunFolder, TrainConfig, train_run
from fastgr.config import versions
from fastgr.files import write_text

BASE = dict(noise=0.4, noise_type="symmetric", arch="cifar_resnet20", epochs=40, lr=0.1, bs=128, wd=5e-4,
            augment="crop+flip", seed=0)

ROWS = {
    "ce": ("CE", dict(loss="ce")),
    "gr_1_16": ("GR lam 1, beta 16 (the paper's r=0.4 setting)", dict(lam=1.0, beta=16.0, warmup=0.0)),
    "gr_1_16_blend": ("GR lam 1, beta 16, CE blended in over the first half",
                      dict(lam=1.0, beta=16.0, warmup=0.5, warmup_mode="blend")),
    "gr_1_16_blend20": ("GR lam 1, beta 16, CE blended in over the first fifth",
                        dict(lam=1.0, beta=16.0, warmup=0.2, warmup_mode="blend")),
    "gr_1_16_ramp": ("GR lam 1, beta 16, lam/beta ramped from (0, 2) over the first half",
                     dict(lam=1.0, beta=16.0, warmup=0.5, warmup_mode="ramp")),
    "gr_05_8": ("GR lam 0.5, beta 8 (the paper's fixed default)", dict(lam=0.5, beta=8.0, warmup=0.0)),
    "preset": ("GR `--preset` with the CLI's defaults", dict(preset=True)),
    "tune": ("GR `--tune` (TUNE_GRID), which chose", dict(tune=True)),
}


def table(rows: dict) -> str:
    "The Markdown table of BENCHMARKS.md."
    f = lambda v, s="{:.3f}": "-" if v is None else s.format(v)  # noqa: E731
    lines = ["| run | test acc | fit of the given labels | true-label train acc | final gr_ess | collapse warning "
             "(epochs) | minutes |", "|---|---|---|---|---|---|---|"]
    for key in ROWS:
        if key in rows:
            r = rows[key]
            lam = "" if r["lam"] is None else f" (lam {r['lam']:g}, beta {r['beta']:g}, warm-up {r['warmup']:g})"
            lines.append(
                f"| {ROWS[key][0]}{lam if key in ('preset', 'tune') else ''} | {f(r['test_accuracy_final'])} | "
                f"{f(r['train_accuracy_given'])} | {f(r['train_accuracy_true'])} | {f(r['ess_final'])} | "
                f"{'yes' if r['emphasis_collapse_epochs'] else 'no'} ({r['emphasis_collapse_epochs']}) | "
                f"{r['seconds'] / 60:.1f} |")
    return "\n".join(lines)


def recount_collapses(rows: dict, keep: Path, n_classes: int = 10) -> None:
    """Count each kept run's collapse epochs again with the current rule (`fastgr.collapsed_epochs`) from its
    per-epoch gr_ess and gr_mean_p, and its training seconds as `RunFolder.training_seconds` counts them, for rows
    measured before either changed."""
    import pandas as pd

    from fastgr import collapsed_epochs

    for key, r in rows.items():
        metrics = keep / key / "metrics.csv"
        if r["lam"] is None or not metrics.exists():
            continue
        m = pd.read_csv(metrics)
        after = m[(m.epoch - 1) / len(m) >= (r["warmup"] or 0.0)]
        steps = 5000 // BASE["bs"]  # training batches per epoch (the last, incomplete one is dropped)
        r["emphasis_collapse_epochs"] = len(collapsed_epochs(
            [(e, p, steps) for e, p in zip(after.gr_ess, after.gr_mean_p)], n_classes))
        r["ess_min"] = float(after.gr_ess.min())
    for key, r in rows.items():  # training seconds as `RunFolder.training_seconds` counts them now (tuning included)
        if (keep / key / "summary.json").exists():
            r["seconds"] = RunFolder(keep / key).training_seconds()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default=".data/cifar5k")
    ap.add_argument("--rows", nargs="+", default=list(ROWS), choices=list(ROWS))
    ap.add_argument("--out", type=Path, default=Path("bench/results/cifar_budget.json"))
    ap.add_argument("--keep", type=Path, default=None, help="keep the run folders here (an interrupted row resumes)")
    ap.add_argument("--recount", action="store_true", help="train nothing: recount the kept runs' collapse epochs")
    a = ap.parse_args()
    if not Path(a.data, "train").is_dir():
        raise SystemExit(f"{a.data}/train missing: python3 ../shared/tools/unpack_cifar10.py {a.data} "
                         "--train 500 --test 100")
    results = json.loads(a.out.read_text()) if a.out.exists() else {"meta": {}, "rows": {}}
    results["meta"] = {"threads": torch.get_num_threads(), "cuda": torch.cuda.is_available(),
                       "versions": versions(), "protocol": BASE, "data": a.data}
    root = a.keep or Path(tempfile.mkdtemp())
    if a.recount:
        recount_collapses(results["rows"], root)
        write_text(a.out, json.dumps(results, indent=1) + "\n")
        print(table(results["rows"]))
        return
    for key in a.rows:
        cfg = TrainConfig(data=a.data, **{**BASE, **ROWS[key][1]})
        t0 = time.perf_counter()
        out = root / key
        resume = a.keep is not None and (out / "checkpoint.pth").exists() and not (out / "summary.json").exists()
        s = train_run(cfg, out, overwrite=not resume, resume=resume)  # an interrupted row continues
        s["wall_seconds"] = time.perf_counter() - t0
        s["config"] = ROWS[key][1]
        results["rows"][key] = s
        write_text(a.out, json.dumps(results, indent=1) + "\n")
        print(key, json.dumps({k: v for k, v in s.items() if not isinstance(v, dict)}), flush=True)
    print(table(results["rows"]))


if __name__ == "__main__":
    main()
