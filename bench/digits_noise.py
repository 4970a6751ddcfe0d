"""GR against cross-entropy on scikit-learn's digits under injected label noise (CPU, minutes).

    uv run python bench/digits_noise.py [--noise 0.2 0.4 0.6] [--out bench/results/digits.json]

Every row is one `fastgr train` run with the CLI's defaults (cifar_resnet20 at 16x16, 30 epochs, SGD one-cycle
lr 0.1, no augmentation), followed by label correction and retraining (`--correct`). Prints a Markdown table
for BENCHMARKS.md and writes every summary as JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from pathlib import Path

import torch

from fastgr import TrainConfig, train_run
from fastgr.config import versions
from fastgr.files import write_text

METHODS = {
    "CE": dict(loss="ce"),
    "GR, default (lam 0.5, beta 8)": dict(loss="gr"),
    "GR, --preset (paper's table)": dict(loss="gr", preset=True),
}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--noise", type=float, nargs="+", default=[0.2, 0.4, 0.6])
    ap.add_argument("--epochs", type=int, default=30)
    ap.add_argument("--warmup", type=float, default=None, help="GR's warm-up; the CLI's default if not given")
    ap.add_argument("--out", type=Path, default=Path("bench/results/digits.json"))
    a = ap.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for noise in a.noise:
            for name, kw in METHODS.items():
                t0 = time.perf_counter()
                warm = {} if a.warmup is None else {"warmup": a.warmup}
                s = train_run(TrainConfig(noise=noise, epochs=a.epochs, correct=True, **warm, **kw),
                              Path(tmp) / f"{noise}-{name[:2]}-{len(rows)}")
                rows.append({"noise": noise, "method": name, **s, "wall_seconds": time.perf_counter() - t0})
                print(json.dumps(rows[-1]), flush=True)
    a.out.parent.mkdir(parents=True, exist_ok=True)
    meta = {"device": platform.processor() or platform.machine(), "threads": torch.get_num_threads(),
            "versions": versions(), "command": "uv run python bench/digits_noise.py " + " ".join(
                f"--noise {' '.join(map(str, a.noise))} --epochs {a.epochs}".split()
                + ([] if a.warmup is None else ["--warmup", str(a.warmup)])),
            "threads_env": os.environ.get("OMP_NUM_THREADS")}
    write_text(a.out, json.dumps({"meta": meta, "rows": rows}, indent=1) + "\n")
    print(table(rows))


def _f(v) -> str:
    return "-" if v is None else f"{v:.3f}"


def table(rows: list[dict]) -> str:
    "The Markdown table of BENCHMARKS.md."
    lines = ["| noise | method | test acc (final) | fit of given labels | after correction | "
             "correction precision / recall | seconds (train + retrain) |", "|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['noise']:.0%} | {r['method']} | {_f(r['test_accuracy_final'])} | "
                     f"{_f(r['train_accuracy_given'])} | {_f(r['test_accuracy_after_correction'])} | "
                     f"{_f(r['correction_precision'])} / {_f(r['correction_recall'])} | {r['seconds']:.0f} |")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
