"""Training on several processes: `torchrun --nproc_per_node N -m fastgr train ...` or `accelerate launch -m fastgr
train ...`, one process (rank) per GPU, or gloo processes on a CPU.

fastai's `DistributedTrainer` (with `accelerate`) wraps the model in DDP; `ShardedTrainer` extends it so that a run
with N ranks of batch `bs` *is* the one-process run of batch `N * bs`: `ShardDL` cuts every global batch of the
training loader's order (a function of `(seed, epoch)`, the same on every rank) into N consecutive slices, one a
rank, and GR normalises its weights over the global batch (`gr_terms(world=True)`). The held-out set is evaluated
whole on every rank, so metrics and the summary are exact without gathering; per-epoch training statistics
(`FitMonitor`, GR's columns) are summed over the ranks once an epoch (`world_sum`). Rank 0 alone writes the run
folder (`RunFolder(writes=False)` on the others); every rank checks that it holds the same data and labels.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
from collections.abc import Iterator
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # torch is imported where used: the CLI reads the launch's size before anything heavy
    import torch

__all__ = ["world_size", "group_size", "rank", "is_main", "processes", "rank_device", "backend_device",
           "check_agree", "world_sum", "world_gather"]


def world_size() -> int:
    "Processes of the launch (torchrun's and accelerate's `WORLD_SIZE`); 1 when launched alone."
    return max(1, int(os.environ.get("WORLD_SIZE", 1)))


def rank() -> int:
    "This process's rank (`RANK`); 0 when launched alone."
    return int(os.environ.get("RANK", 0))


def is_main() -> bool:
    "Whether this process writes the run folder and reports: rank 0."
    return rank() == 0


def _initialised() -> bool:
    import torch.distributed as dist

    return dist.is_available() and dist.is_initialized()


def group_size() -> int:
    "Ranks of the initialised process group (however it was started); 1 outside one."
    import torch.distributed as dist

    return dist.get_world_size() if _initialised() else 1


def rank_device(device: torch.device | str) -> torch.device:
    "The device this rank trains on: `cuda` becomes `cuda:LOCAL_RANK` under a launch of several processes."
    import torch

    device = torch.device(device)
    if world_size() > 1 and device.type == "cuda":
        return torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
    return device


@contextlib.contextmanager
def processes(device: torch.device) -> Iterator[torch.device]:
    """Join the launch's process group (accelerate's `PartialState`: nccl on GPUs, gloo on the CPU) for the length
    of a run, and yield this rank's device; launched alone, nothing happens."""
    if world_size() <= 1:
        yield device
        return
    try:
        from accelerate import PartialState
    except ImportError:
        raise ImportError("training on several processes needs accelerate: pip install 'fastgr[distributed]'") \
            from None
    import torch.distributed as dist

    own = not _initialised()
    state = PartialState(cpu=device.type == "cpu")
    if state.num_processes != world_size():
        raise RuntimeError(f"the launch has WORLD_SIZE={world_size()} but accelerate joined {state.num_processes} "
                           "process(es); launch with torchrun or accelerate launch")
    try:
        yield rank_device(device)
    finally:
        if own and _initialised():
            dist.destroy_process_group()


def backend_device() -> torch.device:
    "Where collectives take their tensors: nccl needs CUDA ones, gloo CPU ones."
    import torch
    import torch.distributed as dist

    return torch.device("cuda", torch.cuda.current_device()) if dist.get_backend() == "nccl" else torch.device("cpu")


def check_agree(what: str, *arrays) -> None:
    """Raise unless every rank holds the same `arrays` (a digest of them is compared): the data each rank listed,
    the labels it drew. Launched alone, nothing to compare."""
    if group_size() <= 1:
        return
    import numpy as np
    import torch
    import torch.distributed as dist

    h = hashlib.sha256()
    for a in arrays:
        h.update(np.ascontiguousarray(np.asarray(a)).tobytes() if not isinstance(a, (list, tuple)) else
                 "\0".join(map(str, a)).encode())
    mine = torch.tensor(list(h.digest()[:8]), dtype=torch.long, device=backend_device())
    ref = mine.clone()
    dist.broadcast(ref, 0)
    differs = (ref != mine).any().to(torch.int32)
    dist.all_reduce(differs)
    if differs.item():
        raise RuntimeError(f"the processes disagree on {what}: every rank must see the same files and options")


def world_sum(t: torch.Tensor) -> torch.Tensor:
    "`t` summed over every rank (a copy); `t` itself when launched alone. A collective: every rank must call it."
    if group_size() <= 1:
        return t
    import torch.distributed as dist

    dev = backend_device()
    out = t.detach().to(dev, copy=True)
    dist.all_reduce(out)
    return out.to(t.device)


def world_gather(t: torch.Tensor) -> torch.Tensor:
    "Every rank's `t` (same shape on each), concatenated in rank order on dim 0; `t` itself when launched alone."
    if group_size() <= 1:
        return t
    import torch
    import torch.distributed as dist

    dev = backend_device()
    parts = [torch.empty_like(t, device=dev) for _ in range(group_size())]
    dist.all_gather(parts, t.detach().to(dev).contiguous())
    return torch.cat(parts).to(t.device)
