"""fastai's distributed training, extended for fastgr's runs: `ShardedTrainer` and its loader `ShardDL`.

Imported only under a launch of several processes (`sharded_training`, from `fastgr.training`): fastai's
`DistributedTrainer` needs `accelerate`, an optional dependency (`pip install 'fastgr[distributed]'`).
docs/design.md, "Several processes", says why the ranks share each global batch and evaluate the held-out set whole.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch

try:
    import accelerate  # noqa: F401  (fastai.distributed defines DistributedTrainer only when it imports)
except ImportError:
    raise ImportError("training on several processes needs accelerate: pip install 'fastgr[distributed]'") from None
from fastai.distributed import DistributedDL, DistributedTrainer
from fastai.torch_core import to_detach

from .ranks import backend_device

__all__ = ["ShardDL", "ShardedTrainer", "sharded_training"]


class ShardDL(DistributedDL):
    """fastai's `DistributedDL` whose ranks share every global batch: with N ranks and batch `bs`, global batch k is
    items `k*N*bs ... (k+1)*N*bs` of the wrapped loader's order, and rank r gets its r-th slice of `bs` (the last
    batch, without `drop_last`, is padded by repeating the order's start up to a multiple of N). The ranks' batches,
    concatenated, are the batches of one process with batch `N * bs`."""

    # this rank's order is fastai's own (`batch_indices` reads it there), not the wrapped loader's whole pass
    epoch_indices = None

    def _broadcast(self, t, rank):
        "fastai's broadcast of rank `rank`'s order, on the backend's device (nccl: CUDA, gloo: CPU tensors)."
        import torch.distributed as dist

        t = torch.as_tensor(t, dtype=torch.long, device=backend_device())
        dist.broadcast(t, rank)
        return t.cpu().tolist()

    def __len__(self):
        n, gb = self.dl.n, self.bs * self.world_size
        return n // gb if self.drop_last else -(-n // gb)

    def get_idxs(self):
        idxs = self._broadcast(list(self.dl.get_idxs()), 0)  # rank 0's order on every rank
        self.n = len(idxs)
        gb, w = self.bs * self.world_size, self.world_size
        if self.drop_last:
            idxs = idxs[: len(idxs) // gb * gb]
        else:
            pad = -len(idxs) % w
            idxs = idxs + (idxs * (pad // max(len(idxs), 1) + 1))[:pad]
        self.n_padded = len(idxs)
        mine = []
        for k in range(0, len(idxs), gb):
            chunk = idxs[k : k + gb]
            step = len(chunk) // w
            mine += chunk[self.rank * step : (self.rank + 1) * step]
        return mine

    def to_detach(self, b, cpu=True, gather=True):
        # gathered in rank order, a batch-level tensor is the global batch itself: nothing to unpad
        return to_detach(b, cpu, gather)

    # what fastgr's callbacks ask the training loader, answered by the wrapped one
    def set_epoch(self, epoch: int) -> None:
        "The next pass draws epoch `epoch`'s order (`SeedEpoch`)."
        if hasattr(self.dl, "set_epoch"):
            self.dl.set_epoch(epoch)

    @property
    def batch_idx(self):
        "Dataset indices of this rank's last batch (`fastgr.telemetry.batch_indices`)."
        return getattr(self.dl, "batch_idx", None)

    @property
    def vocab(self):
        return self.dl.vocab


def revert_sync_batchnorm(module: torch.nn.Module) -> torch.nn.Module:
    "`nn.SyncBatchNorm` layers back to `BatchNorm2d`, state and all: the exported model must predict on a CPU too."
    if isinstance(module, torch.nn.SyncBatchNorm):
        bn = torch.nn.BatchNorm2d(module.num_features, module.eps, module.momentum, module.affine,
                                  module.track_running_stats)
        bn.load_state_dict(module.state_dict())
        return bn.to(next(module.parameters(), next(module.buffers())).device).train(module.training)
    for name, child in module.named_children():
        setattr(module, name, revert_sync_batchnorm(child))
    return module


class ShardedTrainer(DistributedTrainer):
    """fastai's `DistributedTrainer` (DDP through accelerate) with the training loader sharded by `ShardDL`, the
    held-out loaders left whole (every rank evaluates all of it: exact metrics without gathering), and batch-norm
    synchronised across GPUs for the length of the fit (`nn.SyncBatchNorm` is CUDA-only: on gloo CPU ranks each
    normalises its own slice, and DDP keeps rank 0's running statistics on every rank)."""

    def __init__(
        self,
        cuda: bool,  # the ranks train on GPUs (nccl, SyncBatchNorm), else on CPUs (gloo)
    ):
        super().__init__(sync_bn=cuda, cpu=not cuda)

    def _wrap_dl(self, dl):
        if isinstance(dl, ShardDL) or dl is not self.old_dls[0]:
            return dl
        return ShardDL(dl, device=getattr(dl, "device", None))

    def after_fit(self):
        super().after_fit()
        if self.sync_bn:
            self.learn.model = revert_sync_batchnorm(self.learn.model)


@contextlib.contextmanager
def sharded_training(
    learn,  # a Learner whose model and loaders are on this rank's device
) -> Iterator:
    "Fit `learn` on every rank of the launch: `ShardedTrainer` for the length of the block."
    trainer = ShardedTrainer(cuda=torch.device(learn.dls.device or "cpu").type == "cuda")
    learn.add_cb(trainer)
    try:
        yield learn
    finally:
        learn.remove_cb(trainer)
