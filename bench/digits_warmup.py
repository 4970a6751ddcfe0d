"""How long a warm-up each GR setting wants on the digits demo: the fixed default and `--preset`, warm-up 0 / 0.2 / 0.5.

    uv run python bench/digits_warmup.py [--noise 0.2 0.4 0.6] [--keep .data/digits_warmup]

Every row is one `fastgr train` run on scikit-learn's digits with the CLI's defaults otherwise (cifar_resnet20 at
16x16, 30 epochs, SGD one-cycle lr 0.1, no augmentation, blend warm-up), i.e.
`uv run fastgr train [--preset] --noise N --warmup W`. With `--keep`, a finished run folder of the same name is
read instead of trained again. Writes bench/results/digits_warmup.json and prints a Markdown table.
"""

from __future__ import annotations

import argparse
import json
import platform
import tempfile
import time
from pathlib import Path

import torch

from fastgr import TrainConfig, train_run
from fastgr.config import versions
from fastgr.files import write_text

SETTINGS = {"default": ("the default", {}), "preset": ("`--preset`", {"preset": True})}
WARMUPS = (0.0, 0.2, 0.5)


def table(rows: list[dict]) -> str:
    lines = ["| noise | setting | " + " | ".join(f"warm-up {w:g}" for w in WARMUPS) + " |",
             "|---|---|" + "---|" * len(WARMUPS)]
    for noise in sorted({r["noise"] for r in rows}):
        for key, (name, _) in SETTINGS.items():
            got = {r["warmup"]: r for r in rows if r["noise"] == noise and r["setting"] == key}
            if got:
                cells = [f"{got[w]['test_accuracy_final']:.3f}" if w in got else "-" for w in WARMUPS]
                lam_beta = next(iter(got.values()))
                lines.append(f"| {noise:.0%} | {name}: lam {lam_beta['lam']:g}, beta {lam_beta['beta']:g} | "
                             + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--noise", type=float, nargs="+", default=[0.2, 0.4, 0.6])
    ap.add_argument("--keep", type=Path, default=None, help="keep the run folders here; finished ones are reused")
    ap.add_argument("--out", type=Path, default=Path("bench/results/digits_warmup.json"))
    a = ap.parse_args()
    root = a.keep or Path(tempfile.mkdtemp())
    rows = []
    for noise in a.noise:
        for key, (_, kw) in SETTINGS.items():
            for w in WARMUPS:
                out = root / f"{key}_n{noise:g}_w{w:g}"
                t0 = time.perf_counter()
                if (out / "summary.json").exists():
                    s = json.loads((out / "summary.json").read_text())
                else:
                    s = train_run(TrainConfig(noise=noise, warmup=w, **kw), out, overwrite=True)
                rows.append({"noise": noise, "setting": key, **s, "wall_seconds": time.perf_counter() - t0})
                print(json.dumps(rows[-1]), flush=True)
    meta = {"device": platform.processor() or platform.machine(), "threads": torch.get_num_threads(),
            "versions": versions(), "command": "uv run python bench/digits_warmup.py --noise "
            + " ".join(f"{n:g}" for n in a.noise)}
    write_text(a.out, json.dumps({"meta": meta, "rows": rows}, indent=1) + "\n")
    print(table(rows))


if __name__ == "__main__":
    main()
