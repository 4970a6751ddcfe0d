"""Training images/s of fastgr's pipeline against a hand-written PyTorch loop: same model, batch, augmentation, bf16.

    python3 ../shared/tools/unpack_cifar10.py .data/cifar10
    uv run python bench/pipeline_speed.py --data .data/cifar10 --device cuda    # ResNet-56, bs 128, bf16

`fastgr` is the learner `fastgr train` builds (`make_dataloaders` + `gr_learner`: the in-memory `TensorDL` with pad-
crop-flip on the device, channels-last, fastai's `MixedPrecision` bf16, `fit_one_cycle`, the fit and label-issue
recorders), with cross-entropy (`fastgr-ce`) and with GR's defaults (`fastgr-gr`); `fastai-sgd` is `fastgr-ce` with
fastai's own per-parameter SGD instead of `fastgr.optim.ForeachSGD`, `fastgr-ce-bare` without the recorders (true-
label fit, examples, label-issue dynamics). `loop` is a plain PyTorch loop over the same uint8 images on the device:
a `randperm` order, `fastgr.augment.augment_batch`, normalise, channels-last, `torch.autocast(bfloat16)`, cross-
entropy, `torch.optim.SGD(foreach)` with momentum 0.9 and weight decay; `loop-compiled` and `loop-cudagraphs` the
same with the model `torch.compile`d (default mode, and "reduce-overhead": CUDA graphs); `fastgr-gr-cudagraphs` is
`fastgr-gr` with the learner's model compiled "reduce-overhead". The streamed path (`--in-memory no`, the same
files): `fastgr-gr-streamed` is `fastgr-gr` over `fastgr.stream.StreamDL` (its default decoding workers, random
resized crops and flips on the device, workers kept from epoch to epoch), `fastgr-gr-streamed-fastai` the same with
fastai's iteration (new workers every epoch: `persistent_workers=False`), `loop-streamed` the hand loop fed by a
plain `torch.utils.data.DataLoader` (as many workers, PIL decoding, pinned memory, pad-crop-flip on the device).
Each timing is the training phase of an epoch (`--steps` batches; no validation), the clock synchronised with the
device at its ends; modes interleave over `--reps` and the median is reported. Prints one JSON line.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from functools import partial

import torch
import torch.nn.functional as F
from fastai.callback.core import Callback


class PhaseTimer(Callback):
    "Wall time of each epoch's training phase (`times`), the device synchronised at both ends (`sync`)."

    order = -100

    def __init__(self, sync):
        self.sync, self.times = sync, []

    def before_train(self):
        self.sync()
        self.t0 = time.perf_counter()

    def after_train(self):
        self.sync()
        self.times.append(time.perf_counter() - self.t0)


class FileSet(torch.utils.data.Dataset):
    "Image files as (uint8 (C, H, W), label) pairs, decoded with PIL: the hand loop's streamed source."

    def __init__(self, paths, labels):
        self.paths, self.labels = list(paths), [int(y) for y in labels]

    def __len__(self):
        return len(self.paths)

    def __getitem__(self, i):
        import numpy as np
        from PIL import Image

        with Image.open(self.paths[i]) as im:
            x = torch.from_numpy(np.array(im.convert("RGB"))).permute(2, 0, 1).contiguous()
        return x, self.labels[i]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default=".data/cifar10")
    ap.add_argument("--arch", default="cifar_resnet56")
    ap.add_argument("--bs", type=int, default=128)
    ap.add_argument("--steps", type=int, default=100, help="training batches per timed epoch")
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--modes", nargs="+", default=["loop", "fastgr-ce", "fastgr-gr", "fastai-sgd"])
    ap.add_argument("--cudnn-benchmark", action="store_true", help="cuDNN's algorithm search for every mode")
    ap.add_argument("--out", default=None)
    ap.add_argument("--profile", default=None, help="write a torch.profiler summary of one epoch of each mode here")
    a = ap.parse_args()

    from fastai.optimizer import SGD

    from fastgr import gr_learner, make_dataloaders
    from fastgr.augment import augment_batch
    from fastgr.config import versions
    from fastgr.data import load_data
    from fastgr.models import create_model

    dev = torch.device(a.device)
    cuda = dev.type == "cuda"
    sync = torch.cuda.synchronize if cuda else (lambda: None)
    data = load_data(a.data, 32)
    n = a.steps * a.bs
    data.train_x, data.train_y = data.train_x[:n], data.train_y[:n]  # one timed epoch = --steps batches
    data.train_items = data.train_items[:n]
    torch.backends.cudnn.benchmark = a.cudnn_benchmark  # off in `fastgr train` (torch's default)

    def streamed_data():
        files = load_data(a.data, 32, in_memory="no")
        files.train_paths, files.train_y = files.train_paths[:n], files.train_y[:n]
        files.train_items = files.train_items[:n]
        return files

    def learner_epoch(loss: str, fastai_sgd: bool, bare: bool = False, compile_mode: str | None = None,
                      streamed: bool = False, fastai_workers: bool = False):
        source = streamed_data() if streamed else data
        dls = make_dataloaders(source, bs=a.bs, device=dev, seed=0, augment="crop+flip", channels_last=cuda)
        if fastai_workers:
            dls.loaders = [dl.new(persistent_workers=False) for dl in dls.loaders]
        timer = PhaseTimer(sync)
        record = dict(true_labels=data.train_y, record_examples=True, record_dynamics=True) if not bare else {}
        learn = gr_learner(dls, a.arch, loss=loss, amp=cuda, cbs=[timer], compile=compile_mode, **record)
        if fastai_sgd:
            learn.opt_func = partial(SGD, mom=0.9, decouple_wd=False)

        def run():
            with learn.no_bar(), learn.no_logging():
                learn.fit_one_cycle(1, 0.1)
            return timer.times[-1]

        run()  # warm-up: cuDNN's algorithm search, the allocator
        return run

    def loop_epoch(compile_mode: str | None = None, streamed: bool = False):
        mean, std = data.channel_stats()
        x_all, y_all = data.train_x.to(dev), data.train_y.to(dev)
        if streamed:
            from fastgr.stream import default_workers

            files = streamed_data()
            loader = torch.utils.data.DataLoader(
                FileSet(files.train_paths, files.train_y), batch_size=a.bs, shuffle=True, drop_last=True,
                num_workers=default_workers(dev), pin_memory=cuda, persistent_workers=True)
        mean = torch.tensor(mean, device=dev).mul(255).view(1, -1, 1, 1)
        std = torch.tensor(std, device=dev).mul(255).view(1, -1, 1, 1)
        model = create_model(a.arch, data.n_classes, 3).to(dev, memory_format=torch.channels_last if cuda else
                                                           torch.contiguous_format)
        opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9, weight_decay=5e-4, foreach=True)
        forward = torch.compile(model, mode=compile_mode) if compile_mode else model
        gen = torch.Generator(device=dev).manual_seed(0)

        def run():
            model.train()
            sync()
            t0 = time.perf_counter()
            order = torch.randperm(n, device=dev, generator=gen)
            batches = iter(loader) if streamed else None
            for i in range(a.steps):
                if streamed:
                    xu, yb = (t.to(dev, non_blocking=True) for t in next(batches))
                else:
                    idx = order[i * a.bs:(i + 1) * a.bs]
                    xu, yb = x_all[idx], y_all[idx]
                xb = augment_batch(xu, 4, True, gen).float().sub_(mean).div_(std)
                if cuda:
                    xb = xb.contiguous(memory_format=torch.channels_last)
                with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=cuda):
                    loss = F.cross_entropy(forward(xb), yb)
                loss.backward()
                opt.step()
                opt.zero_grad(set_to_none=True)
            sync()
            return time.perf_counter() - t0

        run()  # warm-up
        return run

    makers = {"loop": loop_epoch, "loop-compiled": partial(loop_epoch, "default"),
              "loop-cudagraphs": partial(loop_epoch, "reduce-overhead"),
              "fastgr-ce-bare": partial(learner_epoch, "ce", False, True),
              "fastgr-ce": partial(learner_epoch, "ce", False),
              "fastgr-gr": partial(learner_epoch, "gr", False), "fastai-sgd": partial(learner_epoch, "ce", True),
              "fastgr-gr-cudagraphs": partial(learner_epoch, "gr", False, compile_mode="reduce-overhead"),
              "fastgr-gr-streamed": partial(learner_epoch, "gr", False, streamed=True),
              "fastgr-gr-streamed-fastai": partial(learner_epoch, "gr", False, streamed=True, fastai_workers=True),
              "loop-streamed": partial(loop_epoch, streamed=True)}
    runs = {m: makers[m]() for m in a.modes}
    times = {m: [] for m in a.modes}
    for rep in range(a.reps):
        for m in (a.modes if rep % 2 == 0 else a.modes[::-1]):
            times[m].append(runs[m]())
    ips = {m: n / statistics.median(t) for m, t in times.items()}
    out = {"device": torch.cuda.get_device_name(dev) if cuda else "cpu", "arch": a.arch, "bs": a.bs,
           "steps": a.steps, "reps": a.reps, "amp": cuda,
           "cudnn_benchmark": a.cudnn_benchmark, "images_per_s": ips,
           "ms_per_step": {m: 1e3 * statistics.median(t) / a.steps for m, t in times.items()},
           "epoch_seconds": times,
           "versions": versions()}
    if "loop" in ips:
        out["vs_loop"] = {m: v / ips["loop"] for m, v in ips.items() if m != "loop"}
    line = json.dumps(out)
    print(line, flush=True)
    if a.out:
        with open(a.out, "w") as f:
            f.write(line + "\n")
    if a.profile:  # after the figures are out: summarising a trace can take minutes
        from torch.profiler import ProfilerActivity, profile

        acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if cuda else [])
        with open(a.profile, "w") as f:
            for m in a.modes:
                with profile(activities=acts) as prof:
                    runs[m]()
                f.write(f"## {m}: one epoch of {a.steps} steps\n")
                for key in ("self_cpu_time_total",) + (("self_device_time_total",) if cuda else ()):
                    f.write(prof.key_averages().table(sort_by=key, row_limit=25) + "\n")


if __name__ == "__main__":
    main()
