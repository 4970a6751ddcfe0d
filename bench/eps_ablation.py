"""The reference layer's `eps`: GR with and without it on digits, clean and with 40% symmetric noise (CPU, minutes).

    uv run python bench/eps_ablation.py [--out bench/results/eps_ablation.json]

`eps` (default 1e-6, the `+ 1e-6` of the authors' layer `(p - y) / (2 - 2p + 1e-6)`) lets a fitted example stop
pushing its logits; `eps=0` is the bare formula of docs/design.md. Every run is `fastgr train` with the CLI's defaults
otherwise (digits, cifar_resnet20 at 16x16, 30 epochs, lam 0.5, beta 8), warm-up off so that only `eps` differs.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import torch

from fastgr import TrainConfig, train_run
from fastgr.config import versions
from fastgr.files import write_text


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--noise", type=float, nargs="+", default=[0.0, 0.4])
    ap.add_argument("--eps", type=float, nargs="+", default=[0.0, 1e-6])
    ap.add_argument("--out", type=Path, default=Path("bench/results/eps_ablation.json"))
    a = ap.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for noise in a.noise:
            for eps in a.eps:
                t0 = time.perf_counter()
                s = train_run(TrainConfig(noise=noise, eps=eps, warmup=0.0), Path(tmp) / f"{noise}-{eps}")
                rows.append({"noise": noise, "eps": eps, **s, "wall_seconds": time.perf_counter() - t0})
                print(json.dumps(rows[-1]), flush=True)
    meta = {"threads": torch.get_num_threads(), "versions": versions(),
            "command": f"uv run python bench/eps_ablation.py --noise {' '.join(map(str, a.noise))} "
                       f"--eps {' '.join(map(str, a.eps))}"}
    write_text(a.out, json.dumps({"meta": meta, "rows": rows}, indent=1) + "\n")
    print("| noise | eps | test acc (final) | fit of given labels | lowest epoch gr_ess | seconds |\n"
          "|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['noise']:.0%} | {r['eps']:g} | {r['test_accuracy_final']:.3f} | {r['train_accuracy_given']:.3f} | "
              f"{r['ess_min']:.3f} | {r['seconds']:.0f} |")


if __name__ == "__main__":
    main()
