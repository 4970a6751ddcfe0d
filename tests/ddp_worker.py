"""A process of the 2-rank (gloo, CPU) DDP test in test_distributed.py; spawned, so it lives in a module."""

import os

import torch
import torch.distributed as dist
from torch import nn


def run(rank: int, world: int, port: int, x, y, state, lr: float, out: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        from fastai.data.core import DataLoaders
        from fastai.data.load import DataLoader
        from fastai.learner import Learner
        from fastai.losses import CrossEntropyLossFlat
        from fastai.optimizer import SGD
        from torch.nn.parallel import DistributedDataParallel as DDP

        from fastgr import GRCallback, gr_terms

        xs, ys = x.chunk(world)[rank], y.chunk(world)[rank]
        # 1. the pure function inside DDP
        model = nn.Linear(x.shape[1], state["weight"].shape[0])
        model.load_state_dict(state)
        ddp = DDP(model)
        logits = ddp(xs)
        terms = gr_terms(logits, ys, lam=1.0, beta=16.0, world=True)
        (terms.gradient.detach() * logits).sum().backward()
        grad = model.weight.grad.clone()
        weight_sum = terms.weight.sum().clone()
        dist.all_reduce(weight_sum)
        # 2. GRCallback in a fastai Learner around a DDP model, one SGD step on this rank's shard
        model2 = nn.Linear(x.shape[1], state["weight"].shape[0])
        model2.load_state_dict(state)
        dl = DataLoader(list(zip(xs, ys)), bs=len(ys), shuffle=False)
        learn = Learner(DataLoaders(dl, dl), DDP(model2), loss_func=CrossEntropyLossFlat(),
                        opt_func=lambda p, lr: SGD(p, lr, mom=0.0, wd=0.0), cbs=[GRCallback(lam=1.0, beta=16.0)])
        with learn.no_bar(), learn.no_logging():
            learn.fit(1, lr)
        if rank == 0:
            torch.save({"grad": grad, "weight_sum": weight_sum, "stepped": model2.weight.detach().clone()}, out)
    finally:
        dist.destroy_process_group()


def agree(rank: int, world: int, port: int, out: str) -> None:
    "check_agree on equal and on differing arrays, world_sum and world_gather; rank 0 saves what it saw."
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        from fastgr.ranks import check_agree, world_gather, world_sum

        check_agree("the labels", torch.arange(5).numpy(), ["a.png", "b.png"])  # the same everywhere: passes
        try:
            check_agree("the labels", torch.arange(5).numpy() + (rank == 1))
            error = None
        except RuntimeError as e:
            error = str(e)
        total = world_sum(torch.tensor([1.0, rank + 1.0]))
        gathered = world_gather(torch.full((2,), float(rank)))
        if rank == 0:
            torch.save({"error": error, "sum": total, "gathered": gathered}, out)
    finally:
        dist.destroy_process_group()


def shards(rank: int, world: int, port: int, out: str) -> None:
    "ShardDL over a TensorDL of 10 items, batch 3 a rank, with and without drop_last: rank 0 saves both ranks' batches."
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), WORLD_SIZE=str(world), RANK=str(rank))
    dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        from fastgr.distributed import ShardDL
        from fastgr.loader import ImageTensors, TensorDL

        x = torch.arange(10, dtype=torch.uint8).view(10, 1, 1, 1).expand(10, 1, 2, 2).contiguous()
        got = {}
        for drop in (False, True):
            dl = TensorDL(ImageTensors(x, torch.zeros(10, dtype=torch.long)), bs=3, shuffle=True, drop_last=drop,
                          seed=1)
            shard = ShardDL(dl, rank=rank, world_size=world)
            mine = [shard.batch_idx.tolist() for _ in shard]
            dl.set_epoch(0)  # the pass moved it on to epoch 1: epoch 0's order is the one the ranks shared
            order = dl.get_idxs().tolist()
            every = [None] * world
            dist.all_gather_object(every, mine)
            got[drop] = {"order": order, "batches": every, "len": len(shard)}
        if rank == 0:
            torch.save(got, out)
    finally:
        dist.destroy_process_group()
