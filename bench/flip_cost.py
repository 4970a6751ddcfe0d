"""The streamed path's flip: fastai's `Flip` (an affine warp, a bilinear `grid_sample` of the whole batch) against
`fastgr.augment.FlipEach` (each image mirrored or not, one `torch.where`), timed on the same batches.

    uv run python bench/flip_cost.py [--device cpu] [--sizes 4 32] [--bs 128] [--reps 200]

Each transform is called on a (bs, 3, size, size) float batch as a training batch (`split_idx=0`), the two in turn,
`--reps` times; medians of the wall time per call (the device synchronised after each call on CUDA). At 4 px the
tensor work is nil: what is left is each transform's host time. Also checks that the two give the same images
for the same draws (fastai's flip with `align_corners=True` maps pixel centres onto pixel centres). Results go to
bench/results/flip_cost.json.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--sizes", type=int, nargs="+", default=[4, 32])
    ap.add_argument("--bs", type=int, default=128)
    ap.add_argument("--reps", type=int, default=200)
    ap.add_argument("--out", type=Path, default=Path("bench/results/flip_cost.json"))
    a = ap.parse_args()
    from fastai.torch_core import TensorImage
    from fastai.vision.augment import Flip

    from fastgr.augment import FlipEach
    from fastgr.config import versions
    from fastgr.files import write_text

    dev = torch.device(a.device)
    sync = torch.cuda.synchronize if dev.type == "cuda" else (lambda: None)
    theirs, ours = Flip(p=0.5), FlipEach()
    out = {"command": " ".join(sys.argv), "device": a.device, "bs": a.bs, "reps": a.reps,
           "threads": torch.get_num_threads(), "versions": versions(), "ms": {}}
    # the same images: fastai's warp with every image flipped is the mirror, to float rounding
    x = TensorImage(torch.rand(8, 3, 16, 16, device=dev))
    all_flipped = Flip(p=1.0, draw=1)(x, split_idx=0)
    out["max_abs_diff_to_mirror"] = float((all_flipped - x.flip(-1)).abs().max())
    for size in a.sizes:
        x = TensorImage(torch.rand(a.bs, 3, size, size, device=dev))
        times = {"fastai Flip": [], "FlipEach": []}
        for rep in range(a.reps):
            for name, f in (("fastai Flip", theirs), ("FlipEach", ours))[:: 1 if rep % 2 == 0 else -1]:
                sync()
                t = time.perf_counter()
                f(x, split_idx=0)
                sync()
                times[name].append(time.perf_counter() - t)
        out["ms"][str(size)] = {k: 1e3 * statistics.median(v[a.reps // 10 :]) for k, v in times.items()}
        print(size, out["ms"][str(size)], flush=True)
    print("max |fastai all-flipped - mirror|:", out["max_abs_diff_to_mirror"])
    write_text(a.out, json.dumps(out, indent=1) + "\n")


if __name__ == "__main__":
    main()
