"""`TrimHostHeap`: the host heap's free pages handed back to the system after every training step on the CPU, so
that a streamed training's peak memory does not grow with the number of files (docs/design.md, "Streamed data")."""

from __future__ import annotations

import ctypes
import functools

from fastai.callback.core import Callback

__all__ = ["TrimHostHeap", "malloc_trim"]


@functools.cache
def malloc_trim():
    "glibc's `malloc_trim(pad)`, or None where the C library has none (macOS, musl, Windows)."
    try:
        return getattr(ctypes.CDLL(None), "malloc_trim", None)
    except OSError:
        return None


class TrimHostHeap(Callback):
    """After every `every`-th training step, hand the host heap's free pages back to the system (glibc's
    `malloc_trim`). A CPU step's activations, tens of MB, come from glibc's heap once its dynamic mmap threshold has
    risen past them, and freed there they stay resident, scattered among the small objects a streamed epoch
    allocates: peak memory then grows with the folder. Trimming returns them without slowing the step, where a
    fixed mmap threshold (`MALLOC_MMAP_THRESHOLD_`) does slow it (docs/design.md, "Streamed data", has both
    measurements). Does nothing where the C library has no `malloc_trim`."""

    order = 100  # after every other callback's after_batch: the step's tensors are freed

    def __init__(self, every: int = 1):  # trim after this many training steps
        self.every = every

    def after_batch(self):
        trim = malloc_trim()
        if self.training and trim is not None and self.learn.train_iter % self.every == 0:
            trim(0)
