"""Per-example training dynamics: what each training example's given label did through training.

`TrainingDynamics`, a fastai callback for GR and cross-entropy runs alike (it reads the logits, it changes no
gradient), keeps (N,) tensors on the training device and adds every training step's values into them at the
batch's dataset indices (`index_add_`: no host synchronisation, O(N) memory):

- the area under the margin (AUM; Pleiss et al., NeurIPS 2020): the mean over training steps of the given label's
  logit minus the largest other logit. A mislabelled example, whose given label the network never takes to,
  keeps a negative margin;
- the probability of the given label, averaged over the training steps of the last `window` epochs.

Under a launch of several processes each rank adds its own slices; rank 0 gathers the totals once an epoch (its
checkpoint holds them), and `values` sums over the ranks.
"""

from __future__ import annotations

import torch
from fastai.callback.core import Callback
from fastai.callback.mixup import MixHandler

from .ranks import group_size, rank, world_sum
from .schedule import fit_epoch, total_epochs
from .telemetry import batch_indices, is_fitting

__all__ = ["label_margin", "TrainingDynamics"]


def label_margin(
    logits: torch.Tensor,  # (B, C) logits
    targets: torch.Tensor,  # (B,) integer labels in [0, C)
) -> torch.Tensor:  # (B,) float32: z_y - max_{c != y} z_c
    "The margin of each example's label: its logit minus the largest other logit (negative: another class wins)."
    z = logits.detach().float()
    y = targets.reshape(-1, 1).long()
    own = z.gather(1, y).squeeze(1)
    other = z.scatter(1, y, float("-inf")).amax(1)
    return own - other


class TrainingDynamics(Callback):
    """Per-example AUM and late probability of the given label, summed on the device over a training.

    `values()` returns `(aum, mean_p)`, (N,) each, NaN for an example never seen; `state_dict` carries the sums
    across a resumed run. The fits of `fastgr.learner.fit_schedule` (fine-tuning's two) are one training: the
    window counts the epochs of the whole training (`fastgr.schedule.total_epochs`)."""

    order = 60  # after the loss; reads `learn.pred` only
    run_valid = False

    def __init__(
        self,
        n: int,  # training examples: the length of the tensors, indexed by dataset index
        window: int = 5,  # the probability of the given label is averaged over this many last epochs
    ):
        if n < 0 or window < 1:
            raise ValueError(f"n must be >= 0 and window >= 1, got {n} and {window}")
        self.n, self.window = int(n), int(window)
        self.sums: torch.Tensor | None = None  # (4, N + 1): margin sum, steps, late-p sum, late steps; a spare slot

    def before_fit(self):
        self._on = is_fitting(self.learn) and not any(isinstance(cb, MixHandler) for cb in self.learn.cbs)

    def before_train(self):
        self._late = fit_epoch(self.learn) >= total_epochs(self.learn) - self.window

    def after_loss(self):
        if not (self.training and self._on):
            return
        pred, y = self.learn.pred, self.learn.yb[0]
        if pred.ndim != 2:  # one example per row only
            return
        idx = batch_indices(self.learn.dl, self.learn.iter, len(y)).to(pred.device)
        if self.sums is None or self.sums.device != pred.device:
            self.sums = torch.zeros(4, self.n + 1, device=pred.device) if self.sums is None else \
                self.sums.to(pred.device)
        # an example the loader cannot name (-1) is added into the spare last slot, which `values` drops: a boolean
        # mask would need its count on the host (a sync on a GPU)
        idx = torch.where(idx >= 0, idx, self.n)
        z, t = pred, y.reshape(-1)
        ones = torch.ones_like(idx, dtype=torch.float32)
        self.sums[0].index_add_(0, idx, label_margin(z, t))
        self.sums[1].index_add_(0, idx, ones)
        if self._late:
            p = torch.softmax(z.detach().float(), 1).gather(1, t.reshape(-1, 1).long()).squeeze(1)
            self.sums[2].index_add_(0, idx, p)
            self.sums[3].index_add_(0, idx, ones)

    def after_train(self):
        # under several ranks each holds the sums of its own slices; once an epoch rank 0 takes the totals and the
        # others start again from zero, so that rank 0's checkpoint carries everything (a resumed launch loads it on
        # every rank: `load_state_dict` zeroes it on the others)
        if self._on and group_size() > 1:
            mine = self.sums if self.sums is not None else torch.zeros(4, self.n + 1, device=self.learn.dls.device)
            total = world_sum(mine)
            self.sums = total if rank() == 0 else torch.zeros_like(total)

    def values(self) -> tuple[torch.Tensor, torch.Tensor]:
        "(aum, mean_p), (N,) float32 on the CPU, over every rank of a launch (a collective: call it on every rank)."
        s = torch.zeros(4, self.n + 1) if self.sums is None else self.sums
        s = world_sum(s).cpu()[:, : self.n]
        aum = torch.where(s[1] > 0, s[0] / s[1].clamp_min(1), torch.tensor(float("nan")))
        mean_p = torch.where(s[3] > 0, s[2] / s[3].clamp_min(1), torch.tensor(float("nan")))
        return aum, mean_p

    def state_dict(self) -> dict:
        return {"sums": None if self.sums is None else self.sums.cpu()}

    def load_state_dict(self, state: dict) -> None:
        sums = state.get("sums")
        if sums is not None and sums.shape[1] != self.n + 1:  # one slot an example, and a spare
            raise ValueError(f"the checkpoint holds the dynamics of {sums.shape[1] - 1} training examples, this run "
                             f"has {self.n}: it was saved for other data")
        self.sums = sums if sums is None or rank() == 0 else torch.zeros_like(sums)  # rank 0 holds the totals
