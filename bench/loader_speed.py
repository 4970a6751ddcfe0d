"""Images per second of `TensorDL`, the in-memory loader: one training epoch of pad-crop-flip batches on the CPU.

    uv run python bench/loader_speed.py [--n 20000] [--size 32] [--bs 128] [--repeats 5]

Iterates the training loader of `make_dataloaders` over random uint8 images (no model), the median of
`--repeats` epochs after one warm-up epoch, and prints one JSON line. BENCHMARKS.md has the figures.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import torch


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=20000)
    ap.add_argument("--size", type=int, default=32)
    ap.add_argument("--bs", type=int, default=128)
    ap.add_argument("--repeats", type=int, default=5)
    a = ap.parse_args()

    from fastgr.data import ImageData
    from fastgr.dataloaders import make_dataloaders

    g = torch.Generator().manual_seed(0)
    x = torch.randint(0, 256, (a.n, 3, a.size, a.size), dtype=torch.uint8, generator=g)
    y = torch.randint(0, 10, (a.n,), generator=g)
    data = ImageData("random", [str(c) for c in range(10)], x, y, x[:256], y[:256],
                     [str(i) for i in range(a.n)], [str(i) for i in range(256)])
    dl = make_dataloaders(data, bs=a.bs, augment="crop+flip").train
    times = []
    for _ in range(a.repeats + 1):
        t0 = time.perf_counter()
        n = sum(len(yb) for _, yb in dl)
        times.append(time.perf_counter() - t0)
    med = statistics.median(times[1:])
    print(json.dumps({"images": n, "size": a.size, "bs": a.bs, "threads": torch.get_num_threads(),
                      "epoch_seconds_median": round(med, 4), "images_per_second": round(n / med)}))


if __name__ == "__main__":
    main()
