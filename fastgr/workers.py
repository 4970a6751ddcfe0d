"""The worker pool a `fastgr.stream.StreamDL` keeps from pass to pass: each pass's batches are jobs (`EpochJobs`, the
sampler a persistent torch `DataLoader` asks again at every pass), made where they are asked for (`BatchJobs`)."""

from __future__ import annotations

import random

import torch

__all__ = ["BatchJobs", "EpochJobs", "as_made"]


class BatchJobs(torch.utils.data.Dataset):
    """A `StreamDL`'s batches, made where they are asked for (a decoding worker or the main process): job
    `(key, indices)` is those items opened, resized and collated as fastai's loader does, their random draws seeded
    with `key` (the caller's `random` state is left as it was), with the indices of the items kept (an unreadable
    file is skipped). None where every item was skipped."""

    def __init__(self, dl):  # the StreamDL (a worker holds its own copy)
        self.dl = dl

    def __getitem__(self, job: tuple[str, list[int]]):
        key, idxs = job
        state = random.getstate()
        random.seed(key)
        try:
            before = len(self.dl.unreadable)
            made = [(i, o) for i, o in zip(idxs, map(self.dl.do_item, idxs)) if o is not None]
            failed = self.dl.unreadable[before:]  # files that could not be read now (made in a worker: sent back)
            if not made:
                return None, None, failed
            return self.dl.do_batch([o for _, o in made]), torch.tensor([i for i, _ in made], dtype=torch.long), failed
        finally:
            random.setstate(state)


class EpochJobs(torch.utils.data.Sampler):
    "The jobs of the pass about to run: a worker pool that persists asks its sampler again at each pass's start."

    def __init__(self):
        self.jobs = []

    def __iter__(self):
        return iter(self.jobs)

    def __len__(self):
        return len(self.jobs)


def as_made(b):
    "A batch as `BatchJobs` made it (it is collated already)."
    return b
