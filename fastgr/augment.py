"""Batch augmentation on the training device, shared by the in-memory (`fastgr.loader`) and streamed
(`fastgr.stream`) paths: pad-and-random-crop plus horizontal flip for a whole batch at once."""

from __future__ import annotations

import torch
from fastai.data.transforms import ItemTransform, Transform
from fastai.torch_core import TensorImage
from torch import Tensor
from torch.nn import functional as F

__all__ = ["augment_batch", "PadCropFlip", "FlipEach"]


def augment_batch(
    x: Tensor,  # (B, C, H, W) uint8 (or any dtype) images on any device
    pad: int,  # random-crop padding in pixels: a shift of up to `pad` each way, zero fill; 0 for none
    flip: bool,  # flip each image horizontally with probability 1/2
    generator: torch.Generator | None = None,  # on x's device: the randomness, for reproducible batches
) -> Tensor:  # (B, C, H, W), same dtype and device; channels-last strides after a crop
    "Pad-and-random-crop plus horizontal flip for a whole batch at once: no per-image Python, no host sync."
    B, C, H, W = x.shape
    dev = x.device
    if pad > 0:
        xp = F.pad(x, (pad, pad, pad, pad))
        oy = torch.randint(0, 2 * pad + 1, (B, 1), device=dev, generator=generator)
        ox = torch.randint(0, 2 * pad + 1, (B, 1), device=dev, generator=generator)
        rows = (oy + torch.arange(H, device=dev))[:, :, None]  # (B, H, 1)
        cols = (ox + torch.arange(W, device=dev))[:, None, :]  # (B, 1, W)
        b = torch.arange(B, device=dev)[:, None, None]
        x = xp[b, :, rows, cols].permute(0, 3, 1, 2)  # (B, H, W, C) gathered -> (B, C, H, W)
    if flip:
        m = torch.rand(B, device=dev, generator=generator) < 0.5
        x = torch.where(m[:, None, None, None], x.flip(3), x)
    return x


class PadCropFlip(ItemTransform):
    "The paper's augmentation on a whole batch on its device: pad-and-random-crop, then a random horizontal flip."

    order = 10

    def __init__(
        self,
        pad: int,  # crop padding in pixels; 0: no crop
        flip: bool,  # flip half of the images
    ):
        self.pad, self.flip = pad, flip
        self.generator: torch.Generator | None = None  # set by `TensorDL` for each epoch

    def encodes(self, b):
        x, *ys = b
        if self.generator is None:  # outside a pass (fastai's `_one_pass` types a batch): nothing to draw from
            return (x, *ys)
        return (augment_batch(x, self.pad, self.flip, self.generator), *ys)


class FlipEach(Transform):
    """Each training image flipped left-right with probability 1/2, pixel for pixel (`augment_batch`'s flip: one
    `torch.where`, the draw on the batch's device), for `StreamDL`. fastai's `Flip` draws the same but warps the
    whole batch through an affine grid and a bilinear `grid_sample`, several times the host time (BENCHMARKS.md,
    "Streamed data"; `bench/flip_cost.py`)."""

    split_idx, order = 0, 30  # training batches only; with the crop, as fastai's `Flip`

    def encodes(self, x: TensorImage):
        return augment_batch(x, 0, True)
