"""GR's overhead per training step: the same Learner and batches with and without `GRCallback`, side by side.

    uv run python bench/gr_overhead.py                    # CPU: a small CNN, bs 128, 32x32
    uv run python bench/gr_overhead.py --device cuda      # GPU: cifar_resnet56, bs 128, bf16, channels_last

Interleaved repetitions (GR, CE, CE, GR, ...), each timing `--steps` training steps of a fastai Learner, and the
median time per step of each; on CUDA the clock waits for the device only at the boundaries of a repetition.
With `--sync-check` (CUDA) one epoch with GR runs with `torch.cuda.set_sync_debug_mode("error")` from the start of
each training step to the end of its last callback (any host synchronisation there raises), then a second with
warnings on lists where the synchronisations outside the steps come from. Prints one JSON line.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import torch
from fastai.callback.core import Callback
from torch import nn


def small_cnn(c: int = 10) -> nn.Module:
    return nn.Sequential(nn.Conv2d(3, 32, 3, padding=1), nn.BatchNorm2d(32), nn.ReLU(), nn.MaxPool2d(2),
                         nn.Conv2d(32, 64, 3, padding=1), nn.BatchNorm2d(64), nn.ReLU(),
                         nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(64, c))


class SyncOpen(Callback):
    "From the start of each training step, host synchronisations are errors..."

    order = -1000  # before every other callback's before_batch

    def before_batch(self):
        if self.training:
            torch.cuda.set_sync_debug_mode("error")


class SyncClose(Callback):
    "... until the last callback's after_batch."

    order = 10_000

    def after_batch(self):
        torch.cuda.set_sync_debug_mode(0)


def sync_check(learn, gr) -> dict:
    """One epoch with GR: any synchronisation inside a training step raises; a second epoch with warnings on
    lists where the synchronisations outside the steps come from (loading, the epoch's metrics)."""
    import warnings

    window = [SyncOpen(), SyncClose()]
    learn.add_cbs([gr, *window])
    res = {}
    try:
        with learn.no_bar(), learn.no_logging():
            learn.fit(1, 0.01)
        res["steps"] = "no host synchronisation inside a training step"
    except RuntimeError as e:
        res["steps"] = f"failed: {' '.join(str(e).split())[:300]}"
    finally:
        torch.cuda.set_sync_debug_mode(0)
        learn.remove_cbs(window)
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            torch.cuda.set_sync_debug_mode("warn")
            with learn.no_bar(), learn.no_logging():
                learn.fit(1, 0.01)
    finally:
        torch.cuda.set_sync_debug_mode(0)
        learn.remove_cb(gr)
    where: dict[str, int] = {}
    for w in caught:
        if "synchroniz" in str(w.message):
            key = f"{w.filename.split('site-packages/')[-1]}:{w.lineno}"
            where[key] = where.get(key, 0) + 1
    res["epoch_syncs"] = where  # a whole epoch: training, held-out pass, metrics
    return res


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--arch", default=None, help="default: small CNN on CPU, cifar_resnet56 on CUDA")
    ap.add_argument("--bs", type=int, default=128)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--reps", type=int, default=10)
    ap.add_argument("--sync-check", action="store_true")
    a = ap.parse_args()

    from fastai.data.core import DataLoaders

    from fastgr import GRCallback, ImageTensors, TensorDL, gr_learner

    dev = torch.device(a.device)
    cuda = dev.type == "cuda"
    arch = a.arch or ("cifar_resnet56" if cuda else "small_cnn")
    torch.manual_seed(0)
    n = a.bs * a.steps
    x = torch.randint(0, 256, (n, 3, 32, 32), dtype=torch.uint8)
    y = torch.randint(0, 10, (n,))
    common = dict(mean=[0.5] * 3, std=[0.25] * 3, device=dev, channels_last=cuda)
    dl = TensorDL(ImageTensors(x, y), a.bs, shuffle=True, drop_last=True, augment="crop+flip", **common)
    dls = DataLoaders(dl, TensorDL(ImageTensors(x[: a.bs], y[: a.bs]), a.bs, **common), device=dev)
    # the run's own learner, built as `fastgr train` builds it, with cross-entropy; GR is added and removed below
    learn = gr_learner(dls, small_cnn() if arch == "small_cnn" else arch, loss="ce", amp=cuda)
    gr = GRCallback(lam=1.0, beta=16.0)

    def epoch(with_gr: bool) -> float:
        if with_gr:
            learn.add_cb(gr)
        try:
            if cuda:
                torch.cuda.synchronize()
            t0 = time.perf_counter()
            with learn.no_bar(), learn.no_logging():
                learn.fit(1, 0.01)  # training only matters; the held-out batch is one
            if cuda:
                torch.cuda.synchronize()
            return (time.perf_counter() - t0) / a.steps
        finally:
            if with_gr:
                learn.remove_cb(gr)

    epoch(True), epoch(False)  # warm-up
    times = {True: [], False: []}
    for rep in range(a.reps):
        for with_gr in ((True, False) if rep % 2 else (False, True)):
            times[with_gr].append(epoch(with_gr))
    med_gr, med_ce = statistics.median(times[True]), statistics.median(times[False])
    out = {"device": torch.cuda.get_device_name(dev) if cuda else "cpu", "threads": torch.get_num_threads(),
           "arch": arch, "bs": a.bs, "amp": cuda, "steps": a.steps, "reps": a.reps,
           "ms_per_step_ce": med_ce * 1e3, "ms_per_step_gr": med_gr * 1e3, "overhead": med_gr / med_ce - 1}
    if cuda:
        torch.cuda.reset_peak_memory_stats()
        epoch(False)
        peak_ce = torch.cuda.max_memory_allocated()
        torch.cuda.reset_peak_memory_stats()
        epoch(True)
        out["peak_mem_mib_ce"], out["peak_mem_mib_gr"] = peak_ce / 2**20, torch.cuda.max_memory_allocated() / 2**20
    if a.sync_check and cuda:
        out["sync_check"] = sync_check(learn, gr)
    print(json.dumps(out))


if __name__ == "__main__":
    main()
