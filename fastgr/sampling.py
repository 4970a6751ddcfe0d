"""`balanced_order`: a class-balanced order of a training epoch, for `TensorDL(balanced=True)` (`--balanced`)."""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["balanced_order"]


def balanced_order(
    labels: Tensor,  # (N,) int64 class of each example, on the CPU (the labels trained on: noisy ones)
    generator: torch.Generator,  # CPU generator: the order's randomness
) -> Tensor:  # (N,) int64 dataset indices
    """A class-balanced epoch: each block of C indices from the start holds one example of each of the C classes
    present, in a random order, so a batch of B holds each class B/C times (+-1). (The authors' released CIFAR-100
    code draws each batch as 32 random classes x 8 images: balanced within the classes drawn; DESIGN.md.) Each
    class's examples come in a random order, started again (re-drawn) when a rare class runs out; a common class's
    surplus waits for a later epoch. N draws in all: as long as a shuffled epoch."""
    n = len(labels)
    if n == 0:
        return torch.zeros(0, dtype=torch.long)
    classes, cls = torch.unique(labels, return_inverse=True)  # cls: (N,) each example's class as 0..C-1
    c = len(classes)
    slots = torch.rand(-(-n // c), c, generator=generator).argsort(1).flatten()[:n]  # (N,) the class of each slot
    # grouped by class with one sort each (not a pass over N per class: ImageNet has 1,000)
    members = cls.argsort(stable=True).split(torch.bincount(cls, minlength=c).tolist())
    where = slots.argsort(stable=True).split(torch.bincount(slots, minlength=c).tolist())
    order = torch.empty(n, dtype=torch.long)
    for have, need in zip(members, where):
        if not len(need):  # fewer examples than classes: the last block is cut short
            continue
        rounds = -(-len(need) // len(have))
        draws = torch.cat([have[torch.randperm(len(have), generator=generator)] for _ in range(rounds)])
        order[need] = draws[: len(need)]
    return order
