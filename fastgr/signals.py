"""Per-epoch estimates of the share of wrong training labels that need no clean label, as columns of the training
table: the signals a run gives of when it starts to memorise (what fits the given labels beyond them is noise).

- `noise_cl`: cleanlab's confident joint (Northcutt et al., 2021) of the epoch's own training predictions, each
  class's row calibrated to its count of given labels: the share of examples confidently predicted as a class other
  than their given one (confident: the predicted class's probability at least that class's mean self-confidence);
- `noise_aum`: the share of examples whose area under the margin so far is negative (their given label lost to
  another class on average over the steps so far; `fastgr.dynamics.TrainingDynamics`);
- `memorised`: of the examples the last epoch confidently predicted as another class than their given one, the
  share now predicted as their given class: low while the network learns what generalises, rising once it
  memorises labels that disagree with it;
- `confidence`: the mean probability of the predicted class, rescaled so that a uniform guess is 0 and certainty
  1: how competent the network is, read without any label (`fastgr.handover` asks it after the first epoch).

The predictions are those of the training steps (augmented, in-sample), kept on the device at the batches' dataset
indices: no host synchronisation in a step, one small read per epoch.
"""

from __future__ import annotations

import torch
from fastai.callback.core import Callback
from fastai.callback.mixup import MixHandler

from .dynamics import TrainingDynamics
from .ranks import world_sum
from .telemetry import StatColumns, batch_indices, is_fitting

__all__ = ["NoiseSignals", "confident_joint", "calibrated_noise_rate"]


def confident_joint(
    given: torch.Tensor,  # (M,) int64 given labels of the examples seen
    pred: torch.Tensor,  # (M,) int64 their predicted classes
    p_pred: torch.Tensor,  # (M,) float their predicted classes' probabilities
    thresholds: torch.Tensor,  # (C,) each class's mean probability over the examples labelled with it
) -> torch.Tensor:  # (C, C) float64 counts of (given, predicted) over the confident examples; on the tensors' device
    "cleanlab's confident joint: an example counts where its predicted class's probability reaches that class's bar."
    c = thresholds.numel()
    confident = (p_pred >= thresholds[pred]).double()
    joint = torch.zeros(c * c, dtype=torch.float64, device=given.device)
    return joint.index_add_(0, given * c + pred, confident).view(c, c)


def calibrated_noise_rate(
    joint: torch.Tensor,  # (C, C) a confident joint (`confident_joint`)
    counts: torch.Tensor,  # (C,) examples given each label
) -> float:
    "The off-diagonal share of the joint once each row is scaled to its count of given labels (cleanlab's calibration)."
    joint, counts = joint.double().cpu(), counts.double().cpu()
    rows = joint.sum(1, keepdim=True)
    calibrated = torch.where(rows > 0, joint / rows.clamp_min(1) * counts[:, None], torch.zeros_like(joint))
    total = float(calibrated.sum())
    return (total - float(calibrated.diagonal().sum())) / total if total > 0 else 0.0


class NoiseSignals(StatColumns, Callback):
    """Adds `noise_cl`, `noise_aum`, `memorised` and `confidence` (module docstring) to the training table, once per
    training epoch. Reads the logits only; `noise_aum` alongside `TrainingDynamics`, which
    `gr_learner(record_dynamics=True)` adds with it. Under a launch of several processes the epoch's per-example
    values are summed over the ranks (each example is seen by one rank an epoch), so every rank computes the same
    figures."""

    columns = ("noise_cl", "noise_aum", "memorised", "confidence")
    # before fastai's Recorder (50), which reads the columns' names in its before_fit and their values in its
    # after_train; the dynamics' AUM (`values`, summed over the ranks) is read whole whichever runs first
    order = 40
    run_valid = False

    def __init__(
        self,
        n: int,  # training examples: the length of the per-example tensors, indexed by dataset index
    ):
        self.n = int(n)
        self.epoch_stats = {}
        self.disagreed: torch.Tensor | None = None  # (N,) bool: the last epoch's confident disagreements

    def before_fit(self):
        self._on = is_fitting(self.learn) and not any(isinstance(cb, MixHandler) for cb in self.learn.cbs)
        self.add_columns(self.learn)

    def before_epoch(self):
        self.epoch_stats = {}
        self._seen = None  # (4, N + 1): given label + 1 (0: not seen), predicted class + 1, p of each
        self._c = 1

    def after_loss(self):
        if not (self.training and self._on) or self.learn.pred.ndim != 2:
            return
        z, y = self.learn.pred.detach().float(), self.learn.yb[0].reshape(-1).long()
        if self._seen is None:
            self._seen = torch.zeros(4, self.n + 1, device=z.device)
        self._c = z.shape[1]
        idx = batch_indices(self.learn.dl, self.learn.iter, len(y)).to(z.device)
        idx = torch.where(idx >= 0, idx, self.n)  # an example the loader cannot name: the spare slot, dropped
        probs = torch.softmax(z, 1)
        p_pred, pred = probs.max(1)
        self._seen[:, idx] = torch.stack([y.float() + 1, pred.float() + 1, p_pred, probs.gather(1, y[:, None])[:, 0]])

    def after_train(self):
        if not self._on:
            return
        c = self._c  # the logits' width: the classes, whatever the DataLoaders know of them
        seen = world_sum(self._seen if self._seen is not None else
                         torch.zeros(4, self.n + 1, device=self.learn.dls.device))[:, : self.n]
        known = seen[0] > 0
        given, pred, p_pred = (seen[0] - 1).long().clamp_min(0), (seen[1] - 1).long().clamp_min(0), seen[2]
        g, pr, pp = given[known], pred[known], p_pred[known]
        counts = torch.bincount(g, minlength=c).double()
        # each class's bar: the mean probability of the class over the examples labelled with it (cleanlab's
        # per-class threshold of self-confidence)
        bar = torch.zeros(c, dtype=torch.float64, device=g.device).index_add_(0, g, seen[3][known].double())
        thresholds = (bar / counts.clamp_min(1)).to(pp.dtype)
        self.epoch_stats = {"noise_cl": calibrated_noise_rate(confident_joint(g, pr, pp, thresholds), counts),
                            "confidence": (float(pp.double().mean()) - 1 / c) / (1 - 1 / c) if len(pp) else None}
        disagree = known & (pred != given) & (p_pred >= thresholds[pred])
        if self.disagreed is not None and self.disagreed.shape == disagree.shape:
            before = self.disagreed.to(disagree.device) & known
            fitted = before & (pred == given)
            n = int(before.sum())
            self.epoch_stats["memorised"] = float(fitted.sum()) / n if n else None  # none left to memorise
            self.epoch_stats["memorised_base"] = n  # of how many: not a column, what the share's error depends on
        self.disagreed = disagree
        dyn = next((cb for cb in self.learn.cbs if isinstance(cb, TrainingDynamics)), None)
        if dyn is not None:  # a collective: every rank asks
            aum = dyn.values()[0]
            ok = ~torch.isnan(aum)
            self.epoch_stats["noise_aum"] = float((aum[ok] < 0).double().mean()) if ok.any() else None

    def after_fit(self):
        self.remove_columns(self.learn)

    # -- state, for a run that resumes -----------------------------------------------------------
    def state_dict(self) -> dict:
        return {"disagreed": None if self.disagreed is None else self.disagreed.cpu()}

    def load_state_dict(self, state: dict) -> None:
        self.disagreed = state.get("disagreed")
