"""`StreamDL`: a fastai `DataLoader` over image files too many to hold in memory, decoded in worker processes.

fastai's own pipeline: a `Datasets` of `(path, class name)` items opens each image (`OpenImage`), the workers
resize it on the CPU (`fastgr.images.fit_square`: short side, centre square; for training at `PRESIZE` times the
image size, a random square of it, fastai's `Resize`), and the batch is augmented and normalised on the device
(fastai's `RandomResizedCropGPU`, our `FlipEach`, fastai's `IntToFloatTensor` and `Normalize`): fastai's
presizing. Memory holds the file list, not the pixels.

As with `TensorDL`, epoch `e`'s order is a function of `(seed, e)` (`set_epoch`), and so is the workers' random
square of each image (batch `k` of epoch `e` draws from a generator seeded with `(seed, e, k)`, whichever process makes
it); the device's augmentation draws from the random generators that a run's checkpoint saves, so an interrupted run
resumes with the same batches. The decoding workers live as long as the loader (`persistent_workers`, on by
default): fastai's own iteration forks new ones every epoch.

`fastgr.hostmem.TrimHostHeap`, the callback `gr_learner` adds when it trains from a `StreamDL` on the CPU, keeps
the host's peak memory from growing with the number of files (BENCHMARKS.md, "Streamed data").
"""

from __future__ import annotations

import os
import random
import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from fastai.data.core import DataLoaders, Datasets, TfmdDL
from fastai.data.transforms import Categorize, IntToFloatTensor, ItemGetter, Normalize, ToTensor, Transform
from fastai.torch_core import TensorImage, to_device
from fastai.vision.augment import RandomResizedCropGPU, Resize
from fastai.vision.core import PILImage, PILImageBW
from PIL import Image
from torch import Tensor

from .augment import FlipEach
from .config import AUGMENTS
from .workers import BatchJobs, EpochJobs, as_made

__all__ = ["StreamDL", "StreamDataLoaders", "OpenImage", "FitSquare", "UnreadableFileWarning", "PRESIZE",
           "MIN_SCALE", "default_workers"]

PRESIZE = 1.25  # training images are decoded at this many times the image size, then crops are drawn on the device
MIN_SCALE = 0.35  # the smallest area of a training crop, as a fraction of the (presized) image


def default_workers(device) -> int:
    "Decoding processes: up to 8 beside a GPU; on a CPU, which trains with the same cores, at most 2."
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return min(8, cpus) if str(device).startswith("cuda") else min(2, max(1, cpus // 2))


class OpenImage(Transform):
    "A file as a fastai `PILImage` (or `PILImageBW`), every PIL mode decoded as the in-memory path does."

    def __init__(
        self,
        channels: int = 3,  # 1 (grayscale) or 3 (RGB)
        size: int | None = None,  # the side it is fitted to next: a JPEG is decoded at a scale covering it
    ):
        self.channels, self.size = channels, size

    def encodes(self, path: Path | str):
        from .images import open_image

        im = open_image(path, "L" if self.channels == 1 else "RGB", self.size)
        return (PILImageBW if self.channels == 1 else PILImage).create(im)

    def encodes(self, a: np.ndarray | Tensor | Image.Image):  # noqa: F811  (fastai dispatches on the type)
        "An image in memory (`learn.predict`): HxW[xC] or CxHxW uint8 array, CxHxW tensor, PIL image."
        from .images import memory_image, to_mode

        mode = "L" if self.channels == 1 else "RGB"
        return (PILImageBW if self.channels == 1 else PILImage).create(to_mode(memory_image(a), mode))


class FitSquare(Transform):
    "`fastgr.images.fit_square` as a fastai item transform: the short side to `size`, then the centre square."

    order = 1  # where fastai's Resize sits: after the image is opened, before ToTensor

    def __init__(
        self,
        size: int,  # the side of the result
    ):
        self.size = size

    def encodes(self, im: PILImage | PILImageBW):
        from .images import fit_square

        return type(im).create(fit_square(im, self.size))


class ChannelsLast(Transform):
    "The batch's images in channels-last strides, as `TensorDL` hands them out on a GPU (the values unchanged)."

    order = 100  # after Normalize (99)

    def encodes(self, x: TensorImage):
        return x.contiguous(memory_format=torch.channels_last)


class UnreadableFileWarning(UserWarning):
    """An image file that was read when the run started could not be read while training: skipped in training, a
    blank image in its place where the loader predicts (the held-out set, the training set after training)."""


class StreamDL(TfmdDL):
    """A fastai `TfmdDL` of image files: opened and resized in `num_workers` processes, augmented and normalised
    per batch on the device. Yields `(x, y)`, `x` float32 (B, C, size, size) normalised. `new(items)` takes paths
    to predict; `new(augment="none")` is the same files without augmentation (predicting the training set)."""

    def __init__(
        self,
        items: Sequence[tuple[Path, int]],  # (file, label) pairs
        vocab: Sequence[str],  # class names in label order
        size: int,  # the side of a batch's images
        channels: int = 3,  # 1 (grayscale) or 3 (RGB)
        bs: int = 64,  # batch size
        shuffle: bool = False,  # a new order every epoch
        drop_last: bool = False,  # drop the last incomplete batch
        augment: str = "none",  # crop+flip, crop (random resized crops) or none (the centre square)
        mean: Sequence[float] = (0.5,),  # per-channel mean, [0, 1] units
        std: Sequence[float] = (0.25,),  # per-channel standard deviation, [0, 1] units
        seed: int = 0,  # seed of the epochs' order
        num_workers: int = 0,  # decoding processes (0: in this one)
        device=None,  # where batches go and are augmented
        channels_last: bool = False,  # hand out channels-last batches (faster convolutions on GPUs)
        persistent_workers: bool = True,  # keep the decoding workers from pass to pass (False: fastai's iteration)
        **kwargs,  # fastai's DataLoader arguments (`get_preds` passes some)
    ):
        if augment not in AUGMENTS:
            raise ValueError(f"unknown augment {augment!r}; choose one of {', '.join(AUGMENTS)}")
        # files; an image in memory (to predict) stays as it is
        self.items = [(Path(p) if isinstance(p, (str, os.PathLike)) else p, int(y)) for p, y in items]
        self.vocab, self.size, self.channels, self.augment = list(vocab), int(size), int(channels), augment
        self.mean, self.std, self.seed, self.channels_last = [float(v) for v in mean], [float(v) for v in std], \
            seed, channels_last
        self.epoch = 0
        side = self.size if augment == "none" else round(self.size * PRESIZE)  # what FitSquare makes of a file
        dsets = Datasets([(p, self.vocab[y]) for p, y in self.items],
                         tfms=[[ItemGetter(0), OpenImage(self.channels, side)],
                               [ItemGetter(1), Categorize(vocab=self.vocab, sort=False)]],
                         do_setup=bool(self.items))  # an export's empty copy has nothing to set up
        if augment == "none":
            after_item, crops = [FitSquare(side), ToTensor()], []
        else:  # presizing: a random square a little larger on the CPU, a random resized crop of it on the device
            after_item = [FitSquare(side), Resize(side), ToTensor()]
            crops = [RandomResizedCropGPU(self.size, min_scale=MIN_SCALE)]
            if augment == "crop+flip":
                crops.append(FlipEach())
        stats = (self.mean * self.channels if len(self.mean) == 1 else self.mean,
                 self.std * self.channels if len(self.std) == 1 else self.std)
        after_batch = [IntToFloatTensor(), *crops, Normalize.from_stats(*stats, cuda=False)]
        if channels_last:
            after_batch.append(ChannelsLast())
        super().__init__(dsets, bs=bs, shuffle=shuffle, drop_last=drop_last, num_workers=num_workers,
                         device=device, after_item=after_item, after_batch=after_batch,
                         persistent_workers=persistent_workers, **kwargs)
        self._pool, self._jobs = None, EpochJobs()
        self.persistent_workers = persistent_workers
        self.unreadable: list[tuple[str, str]] = []  # files that failed while training (changed since verified)
        self.epoch_indices: torch.Tensor | None = None  # the pass's order
        self.batch_idx: torch.Tensor | None = None  # the last batch's dataset indices (kept workers only)
        if device is not None:
            self.to(device)  # the normalisation's statistics too
        if len(self.dataset):
            # fastai types its batches with one pass when first asked (`n_inp`, at the first training step):
            # done here, before any epoch, it cannot draw from an epoch's random generators
            self._one_pass()

    # the settings `new` carries over
    _settings = ("vocab", "size", "channels", "bs", "shuffle", "drop_last", "augment", "mean", "std", "seed",
                 "num_workers", "device", "channels_last")

    def set_epoch(self, epoch: int) -> None:
        "The next pass draws epoch `epoch`'s order."
        self.epoch = epoch

    def to_detach(self, b, cpu=True, gather=True):
        # whole on every rank of a launch, as `TensorDL` is: nothing to gather from the others
        from fastai.torch_core import to_detach

        return to_detach(b, cpu, gather=False)

    def randomize(self):
        # fastai draws a new order generator from the last one; here it is a function of (seed, epoch)
        self.rng = random.Random((self.seed * 1_000_003 + self.epoch) % (2**63))

    def do_item(self, s):
        try:
            return super().do_item(s)
        except Exception as e:  # noqa: BLE001 - a file verified when the run started, unreadable now: skipped
            from .images import unreadable_reason

            path, why = str(self.items[s or 0][0]), unreadable_reason(e)
            if not any(p == path for p, _ in self.unreadable):
                self.unreadable.append((path, why))
                warnings.warn(f"skipped {path}: it could not be read now ({why}), though it was when the run "
                              "started", UnreadableFileWarning, stacklevel=2)
            if self.shuffle:  # training: the batch goes on without it
                return None
            # predicting: a blank image in its place, so that every prediction stays beside its own item
            from PIL import Image

            blank = Image.new("L" if self.channels == 1 else "RGB", (self.size, self.size))
            return self.after_item(((PILImageBW if self.channels == 1 else PILImage).create(blank),
                                    self.dataset.tls[1][s or 0]))

    def get_idxs(self):
        idxs = super().get_idxs()
        self.epoch_indices = torch.as_tensor(idxs, dtype=torch.long)  # public, as `TensorDL`'s
        return idxs

    def before_iter(self):
        super().before_iter()
        self.batch_idx = None

    def after_iter(self):
        super().after_iter()
        self.epoch += 1

    def __iter__(self):
        if not self.persistent_workers:
            yield from super().__iter__()  # fastai's: new workers every pass, fed its order when forked
            return
        # fastai's `DataLoader.__iter__`, step for step, but the batches come from workers that are kept (`_made`)
        self.randomize()
        self.before_iter()
        idxs = self.get_idxs()
        chunks = [idxs[k : k + self.bs] for k in range(0, len(idxs), self.bs)]
        if self.drop_last and chunks and len(chunks[-1]) < self.bs:
            chunks.pop()
        jobs = [(f"{self.seed}/{self.epoch}/{k}", list(c)) for k, c in enumerate(chunks)]
        for made in self._made(jobs):
            b, kept, failed = made
            self.unreadable += [f for f in failed if f not in self.unreadable]  # a worker's, told here
            if b is None:
                continue
            self.batch_idx = kept
            if self.pin_memory and type(b) is list:  # pinning turns tuples into lists
                b = tuple(b)
            if self.device is not None:
                b = to_device(b, self.device)
            yield self.after_batch(b)
        self.after_iter()

    def _made(self, jobs):
        "The jobs' batches, in order: from the worker pool, started at the first pass and kept, or made here."
        # fastai keeps the worker count in its `_FakeLoader`, where `no_multiproc` (`one_batch`) sets it to 0 for a
        # while: read there, not from `num_workers` (which fastai's DataLoader answers with 1)
        workers = self.fake_l.num_workers
        if workers == 0:
            return map(BatchJobs(self).__getitem__, jobs)
        if self._pool is None or self._pool.num_workers != workers:
            self._pool = torch.utils.data.DataLoader(
                BatchJobs(self), batch_size=None, sampler=self._jobs, num_workers=workers, collate_fn=as_made,
                pin_memory=self.pin_memory, timeout=self.timeout, persistent_workers=True,
                pin_memory_device=self.fake_l.pin_memory_device,  # fastai keeps it there only
                # the workers' base seed from a generator of its own, not torch's: where a pass starts the pool
                # (a resumed run starts it later) must not shift the draws that a checkpoint restores
                generator=torch.Generator().manual_seed(self.seed))
        self._jobs.jobs = jobs
        return iter(self._pool)

    def __getstate__(self):
        # a worker pool does not travel (an export, a spawned worker's copy): a copy starts its own
        return {**self.__dict__, "_pool": None}

    def new(self, dataset=None, cls=None, **kwargs) -> StreamDL:
        """A copy with some settings changed; `dataset` may be image files (or `(file, label)` pairs) to predict.
        fastai's own `new(dataset=<Datasets>)` (its `test_dl`, an export's `new_empty`) keeps the files. Settings
        other than `_settings` and the worker options are ignored (the transforms are the loader's own)."""
        if dataset is None:
            items = self.items
        else:
            raw = dataset.items if isinstance(dataset, Datasets) else dataset  # fastai's test_set keeps them raw
            items = [it if isinstance(it, tuple) else (it, 0) for it in raw]
        settings = {k: getattr(self, k) for k in self._settings}
        # fastai keeps the worker count (and the loader's options) in its `_FakeLoader`: `self.num_workers` is 1
        settings.update(num_workers=self.fake_l.num_workers, pin_memory=self.pin_memory, timeout=self.timeout,
                        persistent_workers=self.persistent_workers)
        return (cls or type(self))(items, **{**settings, **{k: v for k, v in kwargs.items() if k in settings}})


class StreamDataLoaders(DataLoaders):
    "fastai's `DataLoaders` of streamed files, whose `test_dl` also takes images in memory."

    def test_dl(self, test_items, rm_type_tfms=None, with_labels: bool = False, **kwargs) -> StreamDL:
        """New items as a loader like the held-out one: files, `(file, label)` pairs, or images in memory (arrays,
        tensors, PIL images) for `learn.predict`. fastai's own `test_dl` picks the transforms to skip by the first
        item's type, which knows files and PIL images of the loader's kind only; `StreamDL.new` takes them all."""
        return self.valid.new(list(test_items), **kwargs)

