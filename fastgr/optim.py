"""fastai's SGD (momentum, L2 weight decay) with one `torch._foreach_*` kernel per operation and parameter group.

fastai's `Optimizer.step` runs its step callbacks (`l2_reg`, `average_grad`, `momentum_step`) one parameter at a
time in Python: for ResNet-56 that is ~170 parameters x 3 small kernels and dict merges a step, which on a GPU
costs more than the network's own kernels (BENCHMARKS.md, "GPU"). `ForeachSGD` is the same optimizer — the same
arithmetic, hyper-parameters, per-parameter `do_wd`, freezing and state (`grad_avg`), so checkpoints of either
load in the other — with the per-parameter loop replaced by list kernels. One difference: `zero_grad` sets the
gradients to None as torch's optimizers do (CUDA graphs need it: see there), so a parameter that gets no gradient
in a step is not stepped by momentum alone; where every trainable parameter gets one, the two agree bit for bit.
"""

from __future__ import annotations

import torch
from fastai.optimizer import Optimizer, average_grad, l2_reg, momentum_step

__all__ = ["ForeachSGD"]


class ForeachSGD(Optimizer):
    "fastai's `SGD(mom=mom, decouple_wd=False)`: grad += wd p (where `do_wd`); avg = mom avg + grad; p -= lr avg."

    def __init__(
        self,
        params,  # parameters or parameter groups, as fastai's `Optimizer` takes them
        lr: float,  # learning rate
        mom: float = 0.9,  # momentum (no dampening)
        wd: float = 0.0,  # L2 weight decay, added to the gradient
    ):
        # the callbacks fastai's SGD would run: hyper-parameter defaults and the reference arithmetic
        super().__init__(params, [l2_reg, average_grad, momentum_step], lr=lr, mom=mom, wd=wd)

    def _groups(self):
        # (parameters with a gradient, hypers) of each group, as `all_params(with_grad=True)` walks them
        for pg, hyper in zip(self.param_lists, self.hypers):
            ps = [p for p in pg if p.grad is not None]
            if ps:
                yield ps, hyper

    def zero_grad(self):
        # None, as torch's optimizers do, not fastai's zeros in place: a kept gradient is the memory the next
        # backward adds into, and under CUDA graphs (`--compile reduce-overhead`) that memory is an output of the
        # last replay, which the next one overwrites (torch refuses the access). A parameter that gets no gradient
        # in a step is then skipped that step, as in `torch.optim.SGD`.
        for pg in self.param_lists:
            for p in pg:
                p.grad = None

    @torch.no_grad()
    def step(self, closure=None):
        if closure is not None:
            raise NotImplementedError("fastai optimizers do not support closure")
        for ps, hyper in self._groups():
            grads = [p.grad for p in ps]
            decay = [i for i, p in enumerate(ps) if self.state[p].get("do_wd", True)]
            if hyper["wd"] != 0 and decay:  # l2_reg
                torch._foreach_add_([grads[i] for i in decay], [ps[i] for i in decay], alpha=hyper["wd"])
            avgs = []
            for p in ps:  # average_grad: a zero average to start, as fastai's
                state = self.state[p]
                if state.get("grad_avg") is None:
                    state["grad_avg"] = torch.zeros_like(p.grad)
                avgs.append(state["grad_avg"])
            torch._foreach_mul_(avgs, hyper["mom"])
            torch._foreach_add_(avgs, grads)
            torch._foreach_add_(ps, avgs, alpha=-hyper["lr"])  # momentum_step
