"""Streamed data: peak memory that does not grow with the number of files, and the loader's speed against the
in-memory path.

    uv run python bench/stream_data.py [--sizes 2000 20000] [--speed-n 2000] [--epochs 3] [--work /tmp/stream_bench]
    uv run python bench/stream_data.py --speed-only   # the speed run alone, the memory results kept

Memory: a folder of N generated JPEGs at 256 px (3 classes, a sixth held out) is trained on for one epoch by
`fastgr train --in-memory no --img-size 32` (CIFAR ResNet-20, no augmentation: the model is small so that the
data path is what is measured), in a fresh process whose peak RSS (`ru_maxrss`, children excluded: the decoding
workers are separate processes of their own, each decoding one batch at a time) is recorded, for each N.
Speed: 128-px JPEGs, one training epoch of each loader alone (batch 128, crop+flip, no model): images per second
of `TensorDL` over the decoded tensor (decoding time reported apart), of `StreamDL` with its default workers kept
from epoch to epoch, and of the same `StreamDL` iterated as fastai does (`persistent_workers=False`: new workers
every epoch), `--epochs` of each in turn.
Results go to bench/results/stream_data.json.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from fastgr.files import write_text

RUN = """
import resource, sys, time
from fastgr import TrainConfig, train_run
t = time.perf_counter()
s = train_run(TrainConfig(data=sys.argv[1], in_memory="no", img_size=32, epochs=1, bs=128, augment="none"),
              sys.argv[2], overwrite=True)
print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, time.perf_counter() - t)
"""


def make_folder(root: Path, n: int, side: int, seed: int = 0) -> Path:
    "N JPEGs of `side` px, smooth random pictures (they compress like photos), 3 classes, every sixth held out."
    from PIL import Image

    if (root / "done").exists():
        return root
    rng = np.random.default_rng(seed)
    for i in range(n):
        d = root / ("valid" if i % 6 == 0 else "train") / f"c{i % 3}"
        d.mkdir(parents=True, exist_ok=True)
        small = rng.integers(0, 255, (8, 8, 3), dtype=np.uint8)
        Image.fromarray(small).resize((side, side), Image.BICUBIC).save(d / f"{i:06d}.jpg", quality=90)
    (root / "done").write_text("")
    return root


def memory(sizes: list[int], work: Path, mmap_threshold: int | None = None) -> dict:
    import os

    env = dict(os.environ)
    if mmap_threshold is not None:  # glibc: blocks above it are mmap'ed and returned when freed (no heap growth)
        env["MALLOC_MMAP_THRESHOLD_"] = str(mmap_threshold)
    out = {}
    for n in sizes:
        root = make_folder(work / f"jpeg256_{n}", n, 256)
        r = subprocess.run([sys.executable, "-c", RUN, str(root), str(work / f"run_{n}")], capture_output=True,
                           text=True, check=True, env=env)
        rss_kb, seconds = r.stdout.split()[-2:]
        out[str(n)] = {"peak_rss_mb": int(rss_kb) / 1024, "seconds": float(seconds)}
        print(n, out[str(n)], flush=True)
    return out


def speed(n: int, work: Path, epochs: int = 3) -> dict:
    import torch

    from fastgr.data import load_data
    from fastgr.dataloaders import make_dataloaders

    root = make_folder(work / f"jpeg128_{n}", n, 128)

    def epoch(dl) -> float:
        t = time.perf_counter()
        seen = 0
        for x, _ in dl:
            seen += len(x)
        return seen / (time.perf_counter() - t)

    t = time.perf_counter()
    mem = load_data(root, in_memory="yes")
    decode = time.perf_counter() - t
    disk = load_data(root, in_memory="no")
    stats = mem.channel_stats()
    a = make_dataloaders(mem, bs=128, augment="crop+flip", stats=stats).train
    b = make_dataloaders(disk, bs=128, augment="crop+flip", stats=stats).train
    c = b.new(persistent_workers=False)
    res = {"n_train": len(mem.train_y), "img_size": mem.img_size, "decode_seconds_in_memory": decode,
           "in_memory_img_per_s": [], "streamed_img_per_s": [], "streamed_fastai_workers_img_per_s": [],
           "workers": b.fake_l.num_workers, "threads": torch.get_num_threads()}
    for _ in range(epochs):  # in turn, so that drift of the machine touches all three
        res["in_memory_img_per_s"].append(epoch(a))
        res["streamed_img_per_s"].append(epoch(b))
        res["streamed_fastai_workers_img_per_s"].append(epoch(c))
    print(res, flush=True)
    return res


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[2000, 20000])
    ap.add_argument("--speed-n", type=int, default=2000)
    ap.add_argument("--epochs", type=int, default=3, help="epochs of each loader in the speed run")
    ap.add_argument("--speed-only", action="store_true", help="the speed run alone; other results kept")
    ap.add_argument("--work", type=Path, default=Path("/tmp/stream_bench"))
    ap.add_argument("--out", type=Path, default=Path("bench/results/stream_data.json"))
    ap.add_argument("--mmap-threshold", type=int, default=None, help="glibc's MALLOC_MMAP_THRESHOLD_ for the "
                    "memory runs (fixed: freed blocks above it go back to the system); results under "
                    "memory_mmap_<BYTES>, merged into --out, no speed run")
    a = ap.parse_args()
    from fastgr.config import versions

    result = json.loads(a.out.read_text()) if a.out.exists() else {}  # other measurements stay beside this one
    if a.mmap_threshold is not None:  # an extra measurement beside the default allocator's
        result[f"memory_mmap_{a.mmap_threshold}"] = {"command": " ".join(sys.argv),
                                                     **memory(a.sizes, a.work, a.mmap_threshold)}
    elif a.speed_only:
        result["speed"] = {"versions": versions(), "command": " ".join(sys.argv),
                           **speed(a.speed_n, a.work, a.epochs)}
    else:
        result.update({"meta": {"versions": versions(), "command": " ".join(sys.argv)},
                       "memory": memory(a.sizes, a.work), "speed": speed(a.speed_n, a.work, a.epochs)})
    write_text(a.out, json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    main()
