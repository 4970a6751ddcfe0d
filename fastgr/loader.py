"""`TensorDL`: a fastai `DataLoader` over images held in memory as one uint8 tensor, augmented on the device.

Small images (digits, CIFAR) are decoded once (`fastgr.data`) and batched straight from a tensor on the training
device: the batch is an index into it, then pad-and-crop, flip and normalisation run on the whole batch at once,
so a GPU is never starved by per-image Python work. `TensorDL` extends fastai's `TfmdDL` the way fastai's own
`TabDataLoader` does (`do_item` passes indices through, `create_batch` indexes the data), so `one_batch`,
`show_batch`, `show_results`, `learn.predict`, `load_learner(...).predict`, `learn.tta` and
`ClassificationInterpretation` (`plot_top_losses`) work as with any fastai loader.

A training epoch's batches are a function of `(seed, epoch)` only: an interrupted run resumes with the same ones.
The dataset indices of the last batch are `dl.batch_idx` (see `fastgr.telemetry.batch_indices`).
"""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import contextmanager

import torch
from fastai.data.core import TfmdDL
from fastai.data.transforms import Category, ItemTransform, Transform
from fastai.torch_core import TensorCategory, TensorImage
from fastai.vision.data import show_batch  # noqa: F401  (its grid of images for TensorImage batches)
from fastai.vision.learner import plot_top_losses, show_results  # noqa: F401  (theirs, for image batches)
from torch import Tensor
from torch.utils.data import TensorDataset

from .augment import PadCropFlip
from .config import AUGMENTS
from .ranks import rank
from .sampling import balanced_order

__all__ = ["AUGMENTS", "ImageTensors", "NormalizeBytes", "ClassNames", "TensorDL"]


class ImageTensors(TensorDataset):
    "Images as one (N, C, H, W) uint8 tensor and their (N,) int64 labels; `new_empty` is what an export keeps."

    def __init__(
        self,
        x: Tensor,  # (N, C, H, W) uint8 images
        y: Tensor,  # (N,) int64 labels
    ):
        if x.ndim != 4 or x.dtype != torch.uint8:
            raise ValueError(f"images must be an (N, C, H, W) uint8 tensor, got {tuple(x.shape)} {x.dtype}")
        if len(x) != len(y):
            raise ValueError(f"{len(x)} images but {len(y)} labels")
        super().__init__(x, torch.as_tensor(y, dtype=torch.long))

    split_idx: int | None = None  # fastai's: 0 applies training-only transforms (TTA sets it), None the loader's own

    @contextmanager
    def set_split_idx(self, i: int | None):
        "fastai's context: the batches drawn inside it are transformed as split `i` (0: training, 1: held out)."
        old, self.split_idx = self.split_idx, i
        try:
            yield self
        finally:
            self.split_idx = old

    @property
    def x(self) -> Tensor:
        return self.tensors[0]

    @property
    def y(self) -> Tensor:
        return self.tensors[1]

    @property
    def loss_func(self):
        "What fastai's `Learner` uses when given no loss: cross-entropy over the integer labels."
        from fastai.losses import CrossEntropyLossFlat

        return CrossEntropyLossFlat()

    def to(self, device) -> ImageTensors:
        "The same images on `device` (one copy, done once, not per batch)."
        return self if device is None or self.x.device == torch.device(device) else \
            ImageTensors(self.x.to(device), self.y.to(device))

    def new_empty(self) -> ImageTensors:
        return ImageTensors(self.x[:0].cpu(), self.y[:0].cpu())


class NormalizeBytes(ItemTransform):
    """uint8 images to float32 `(x - 255 mean) / (255 std)`, channels-last on request; decodes back to uint8
    `TensorImage`s with `TensorCategory` labels, the types fastai's show methods and `Categorize` know."""

    order = 90
    parameters = ["mean", "std"]  # moved with the loader by fastai's `DataLoader.device`

    def __init__(
        self,
        mean: Sequence[float],  # per-channel mean, [0, 1] units
        std: Sequence[float],  # per-channel standard deviation, [0, 1] units
        channels_last: bool = False,  # channels-last strides (faster convolutions on GPUs)
    ):
        # on the 0-255 scale: the arithmetic of the batches every figure in BENCHMARKS.md was measured with
        self.mean = torch.tensor(list(mean)).mul_(255).view(1, -1, 1, 1)
        self.std = torch.tensor(list(std)).mul_(255).view(1, -1, 1, 1)
        self.channels_last = channels_last

    def encodes(self, b):
        x, *ys = b
        x = x.float().sub_(self.mean).div_(self.std)
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        return (x, *ys)

    def decodes(self, b):
        x, *ys = b
        x = (x.float() * self.std.to(x.device) + self.mean.to(x.device)).round_().clamp_(0, 255).to(torch.uint8)
        return (TensorImage(x.contiguous()), *(TensorCategory(y) for y in ys))


class ClassNames(Transform):
    "A label's decoding to its class name (a fastai `Category`, which shows itself as a title)."

    def __init__(
        self,
        vocab: Sequence[str],  # class names in label order
    ):
        self.vocab = list(vocab)

    def decodes(self, o: TensorCategory):
        return Category(self.vocab[int(o)])


class TensorDL(TfmdDL):
    """A fastai `DataLoader` of an `ImageTensors` set: shuffled, augmented and normalised per batch on the device.

    Yields `(x, y)`, `x` float32 (B, C, H, W) normalised. With `shuffle`, epoch `e`'s order and augmentation
    depend only on `(seed, e)`; `epoch` counts finished passes and `set_epoch` sets it (a resumed fit). The
    dataset indices of the last batch are in `batch_idx`, the epoch's order in `epoch_indices`.
    `new(items)` takes raw images (paths, PIL images, arrays, tensors) too: that is what `learn.predict` uses.
    """

    def __init__(
        self,
        dataset: ImageTensors,  # the images and labels (moved to `device` once)
        bs: int = 128,  # batch size
        shuffle: bool = False,  # a new order every epoch
        drop_last: bool = False,  # drop the last incomplete batch
        augment: str = "none",  # crop+flip, crop or none
        mean: Sequence[float] = (0.5,),  # per-channel mean, [0, 1] units
        std: Sequence[float] = (0.25,),  # per-channel standard deviation, [0, 1] units
        seed: int = 0,  # seed of shuffling and augmentation
        channels_last: bool = False,  # hand out channels-last batches (faster convolutions on GPUs)
        balanced: bool = False,  # with shuffle: class-balanced batches of the labels (`balanced_order`)
        vocab: Sequence[str] | None = None,  # class names in label order: `dls.vocab`, decoded predictions
        device: torch.device | str | None = None,  # where the data lives and batches are made
        num_workers: int = 0,  # must be 0: the data is already in memory, there is nothing for workers to do
        **methods,  # fastai's per-instance overrides of its DataLoader methods (`get_preds` passes `get_idxs`)
    ):
        unknown = sorted(set(methods) - set(self._methods))
        if unknown:
            raise TypeError(f"TensorDL got unexpected keyword argument(s): {', '.join(unknown)}")
        if augment not in AUGMENTS:
            raise ValueError(f"unknown augment {augment!r}; choose one of {', '.join(AUGMENTS)}")
        if num_workers:
            raise ValueError("TensorDL batches in memory on its device: it takes no workers (num_workers=0)")
        if not isinstance(dataset, ImageTensors):
            raise TypeError(f"TensorDL needs an ImageTensors dataset, got {type(dataset).__name__}")
        self.augment, self.seed, self.channels_last, self.balanced = augment, seed, channels_last, balanced
        self._labels = dataset.y.cpu() if balanced else None  # the order is drawn on the CPU: no copy per epoch
        self.mean, self.std = [float(v) for v in mean], [float(v) for v in std]
        if vocab is None:  # the labels' own numbers
            vocab = [str(c) for c in range(int(dataset.y.max()) + 1)] if len(dataset) else []
        self.vocab = list(vocab)
        self.epoch, self.epoch_indices, self.batch_idx = 0, None, None
        tfms = [NormalizeBytes(self.mean, self.std, channels_last)]
        if augment != "none":  # the paper's padding for 32x32 images is 4: an eighth of the side
            crop = PadCropFlip(max(1, dataset.x.shape[-1] // 8), augment == "crop+flip")
            crop.split_idx = 0  # training passes only (and TTA's): see `before_iter`
            tfms.insert(0, crop)
        super().__init__(dataset.to(device), bs=bs, shuffle=shuffle, drop_last=drop_last, num_workers=0,
                         device=device, after_item=ClassNames(self.vocab), after_batch=tfms, **methods)
        if len(self.dataset):
            # fastai types its batches with one pass when first asked (`n_inp`, at the first training step):
            # done here, before any epoch's generators exist, it cannot draw from them
            self._one_pass()
            self.batch_idx = None

    # the settings `new` carries over
    _settings = ("bs", "shuffle", "drop_last", "augment", "mean", "std", "seed", "channels_last", "balanced", "vocab",
                 "device")

    @property
    def x(self) -> Tensor:
        return self.dataset.x

    @property
    def y(self) -> Tensor:
        return self.dataset.y

    def to(self, device) -> TensorDL:
        "Move the data (once) and the normalisation to `device`."
        self.dataset = self.dataset.to(device)
        super().to(device)
        return self

    def set_epoch(self, epoch: int) -> None:
        "The next pass draws epoch `epoch`'s order and augmentation."
        self.epoch = epoch

    def _epoch_seed(self) -> int:
        return (self.seed * 1_000_003 + self.epoch) % (2**63)

    @property
    def items(self) -> range:
        "What fastai's `Interpretation` indexes and hands back to `new`: this loader's dataset indices."
        return range(len(self.dataset))

    # fastai's DataLoader events
    def before_iter(self):
        super().before_iter()
        # the augmentation runs on shuffled (training) passes; a held-out or prediction pass is left as it is,
        # unless the dataset says otherwise (fastai's `tta` draws augmented passes under `set_split_idx(0)`)
        split = self.dataset.split_idx if getattr(self.dataset, "split_idx", None) is not None else \
            (0 if self.shuffle else 1)
        self.after_batch.split_idx = split
        # the order comes from a CPU generator (`get_idxs`), the augmentation from one on the data's device; the
        # ranks of a launch share the order but each draws its own augmentation
        for tfm in self.after_batch.fs:
            if isinstance(tfm, PadCropFlip):
                seed = (self._epoch_seed() + 1 + 7_919 * rank()) % (2**63)
                tfm.generator = torch.Generator(device=self.x.device).manual_seed(seed)

    def get_idxs(self) -> Tensor:
        "The coming pass's order: a function of `(seed, epoch)`, the same however often it is asked."
        if not self.shuffle:
            return torch.arange(self.n)
        generator = torch.Generator().manual_seed(self._epoch_seed())
        if self.balanced:
            return balanced_order(self._labels, generator)
        return torch.randperm(self.n, generator=generator)

    def sample(self):
        return ()  # fastai's item-by-item walk through `get_idxs`; `create_batches` slices it whole instead

    def create_batches(self, samps):
        # whole batches sliced from the pass's order, moved to the device once: fastai's item-by-item chunking of
        # `samps` costs more Python per batch than a batch's own work. The order is this loader's own (`get_idxs`,
        # or fastai's override of it; `sample` gave nothing), or the indices a wrapper samples from it (a rank's
        # share under `fastgr.distributed.ShardDL`)
        own = isinstance(samps, tuple) and not samps
        self.epoch_indices = torch.as_tensor(self.get_idxs() if own else list(samps), dtype=torch.long)
        order = self.epoch_indices.to(self.x.device)
        n = len(order)
        for i in range(n // self.bs if self.drop_last else -(-n // self.bs)):
            yield self.do_batch(order[i * self.bs : (i + 1) * self.bs])

    def to_detach(self, b, cpu=True, gather=True):
        # every rank of a launch holds this loader whole (the training one is wrapped by `ShardDL`, which gathers):
        # predictions and held-out metrics are complete on each, with nothing to gather from the others
        from fastai.torch_core import to_detach

        return to_detach(b, cpu, gather=False)

    def retain(self, res, b):
        return res  # batches are plain tensors: no fastai types to carry over (and fastai's per-batch cost saved)

    def do_item(self, s):
        return 0 if s is None else s  # an index: fastai's `_one_pass` types a batch of one

    def create_batch(self, b):
        idx = torch.as_tensor(b, dtype=torch.long).to(self.x.device)
        self.batch_idx = idx
        return self.x[idx], self.y[idx]

    def after_iter(self):
        super().after_iter()
        self.epoch += 1
        for tfm in self.after_batch.fs:
            if isinstance(tfm, PadCropFlip):
                tfm.generator = None  # generators do not pickle; the next pass makes its own

    def new(self, dataset=None, cls=None, **kwargs) -> TensorDL:
        """A copy with some settings changed (fastai calls `new(shuffle=False, drop_last=False)` to predict);
        `dataset` may be raw images to predict, which are decoded to this loader's size and channels."""
        kwargs.pop("process", None)  # fastai's `test_dl` asks tabular loaders to process; images are ready
        if "shuffled" in kwargs:  # what fastai's `tta` passes for `shuffle`
            kwargs["shuffle"] = kwargs.pop("shuffled")
        if dataset is not None and not isinstance(dataset, ImageTensors):
            dataset = self.images(dataset)
        res = (cls or type(self))(self.dataset if dataset is None else dataset,
                                  **{**{k: getattr(self, k) for k in self._settings}, **kwargs})
        if hasattr(self, "_n_inp"):  # fastai's typing of the batches (private, no accessor): the same for a copy
            res._n_inp, res._types = self._n_inp, self._types
        return res

    def images(self, items) -> ImageTensors:
        """Raw images (paths, PIL images, HxW[xC] or CxHxW uint8 arrays, CxHxW uint8 tensors) as this loader's data;
        or indices of this loader's own examples, with their labels (what `Interpretation` asks for, via `items`)."""
        from .images import decode_images

        items = list(items)
        if items and all(isinstance(i, int) and not isinstance(i, bool) for i in items):
            idx = torch.as_tensor(items, dtype=torch.long, device=self.x.device)
            return ImageTensors(self.x[idx], self.y[idx])
        c, h, w = self.x.shape[1:]
        x = decode_images(items, (h, w), c)
        return ImageTensors(x, torch.zeros(len(x), dtype=torch.long))
