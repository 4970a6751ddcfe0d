"""`make_dataloaders`: a run's fastai `DataLoaders`, from images held in memory (`fastgr.loader.TensorDL`) or from
files streamed from disk (`fastgr.stream.StreamDL`), whichever the data is (`ImageData.in_memory`)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from fastai.data.core import DataLoaders
from torch import Tensor

from .loader import ImageTensors, TensorDL
from .stream import StreamDataLoaders, StreamDL, default_workers

__all__ = ["make_dataloaders", "check_balanced"]


def check_balanced(balanced: bool, data) -> None:
    "Class-balanced batches are drawn by `TensorDL` alone: streamed data is refused before anything is written."
    if balanced and not data.in_memory:
        raise ValueError("class-balanced batches (--balanced) need the data in memory; these images are streamed "
                         "(--in-memory yes forces memory)")


def make_dataloaders(
    data,  # the decoded images (`fastgr.data.ImageData`)
    train_y: Tensor | np.ndarray | None = None,  # (N,) labels to train on (noisy ones); data.train_y if None
    bs: int = 128,  # batch size
    device: torch.device | str = "cpu",  # where batches are made and the model trains
    seed: int = 0,  # seed of shuffling and augmentation
    augment: str | None = None,  # crop+flip, crop or none; the data's own choice if None
    channels_last: bool = False,  # channels-last batches (GPU)
    stats: tuple[Sequence[float], Sequence[float]] | None = None,  # per-channel (mean, std) in [0, 1] units to
    # normalise with (a pretrained model's); the data's own if None
    balanced: bool = False,  # class-balanced training batches of `train_y` (`balanced_order`); in-memory data only
) -> DataLoaders:
    "fastai `DataLoaders` of a training loader (shuffled, augmented) and a held-out one (neither)."
    y = data.train_y if train_y is None else torch.as_tensor(np.asarray(train_y), dtype=torch.long)
    mean, std = stats if stats is not None else data.channel_stats()
    check_balanced(balanced, data)
    if not data.in_memory:  # files streamed from disk
        common = dict(vocab=data.classes, size=data.img_size, channels=data.channels, mean=mean, std=std,
                      device=device, seed=seed, num_workers=default_workers(device), channels_last=channels_last)
        train = StreamDL(list(zip(data.train_paths, y.tolist())), bs=bs, shuffle=True, drop_last=len(y) > bs,
                         augment=augment or data.augment, **common)
        valid = StreamDL(list(zip(data.valid_paths, data.valid_y.tolist())), bs=max(bs, 256), **common)
        return StreamDataLoaders(train, valid, device=device)
    common = dict(mean=mean, std=std, device=device, seed=seed, channels_last=channels_last, vocab=data.classes)
    train = TensorDL(ImageTensors(data.train_x, y), bs, shuffle=True, drop_last=len(y) > bs,
                     augment=augment or data.augment, balanced=balanced, **common)
    # the held-out loader carries the augmentation for fastai's `tta` alone: its own passes leave images as they are
    valid = TensorDL(ImageTensors(data.valid_x, data.valid_y), max(bs, 256), augment=augment or data.augment, **common)
    return DataLoaders(train, valid, device=device)
