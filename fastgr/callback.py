"""`GRCallback`: gradient rescaling for any fastai `Learner` that classifies with integer labels."""

from __future__ import annotations

import pandas as pd
import torch
from fastai.callback.core import Callback
from fastai.callback.mixup import MixHandler
from fastai.callback.training import GradientAccumulation
from fastai.learner import Metric

from .gradient import check_settings, effective_sample_size, emphasis_spread, gr_terms

__all__ = ["GRCallback", "GRStat", "batch_indices"]


class GRStat(Metric):
    "A per-epoch GR statistic shown as a column of fastai's training table; `GRCallback` fills it in."

    def __init__(self, cb: GRCallback, key: str):
        self.cb, self.key = cb, key

    @property
    def name(self) -> str:
        return f"gr_{self.key}"

    @property
    def value(self):
        return self.cb.epoch_stats.get(self.key)


class GRCallback(Callback):
    """Gradient rescaling (GR): the gradient sent into the logits becomes `G` of `gr_gradient`.

    Acts in `after_loss` on training batches: `learn.loss_grad` becomes a surrogate whose gradient w.r.t.
    `learn.pred` is `G`, while `learn.loss` (what is logged) stays the learner's own loss. Adds three columns
    to the training table, means over the epoch's training batches: `gr_spread` (emphasis spread),
    `gr_ess` (effective sample size as a fraction of the batch) and `gr_mean_p` (probability of the
    given label).
    """

    # before GradientAccumulation (which rescales `loss_grad` in its own `after_loss`) and MixedPrecision
    order = GradientAccumulation.order - 1
    run_valid = False

    def __init__(
        self,
        lam: float = 0.5,  # emphasis focus parameter: the largest weight goes to p = lam / (1 + lam); >= 0
        beta: float = 8.0,  # emphasis spread parameter: 0 weights every example alike; >= 0
        transform: str = "exp",  # "exp" (GR) or "identity": `g` in w = g(beta * p**lam * (1 - p))
        normalize: str = "sum",  # "sum": weights normalised over the batch; "mean": divided by the batch size
        record_examples: bool = False,  # keep (dataset index, label, p_i, weight) of the last epoch's examples
    ):
        check_settings(lam, beta, transform, normalize)
        self.lam, self.beta, self.transform, self.normalize = lam, beta, transform, normalize
        self.record_examples = record_examples
        self.epoch_stats: dict[str, float] = {}
        self.history: list[dict[str, float]] = []
        self.examples: pd.DataFrame | None = None

    # -- events -------------------------------------------------------------------------------------
    def before_fit(self):
        mixers = [type(cb).__name__ for cb in self.learn.cbs if isinstance(cb, MixHandler)]
        if mixers:
            raise ValueError(
                f"GRCallback cannot train with {', '.join(mixers)}: it mixes labels into soft targets, and GR "
                "is defined for integer class labels only; remove one of the two callbacks"
            )
        self._stats = [GRStat(self, k) for k in ("spread", "ess", "mean_p")]
        # fastai's Recorder builds the table's columns from `learn.metrics` in its own before_fit (order 50)
        self._user_metrics = self.learn.metrics
        self.learn.metrics = [m for m in self._user_metrics if not isinstance(m, GRStat)] + self._stats
        self.history = []

    def before_epoch(self):
        self._sums: dict[str, torch.Tensor] = {}
        self._n_batches = self._n_examples = 0
        self._records: list[tuple[torch.Tensor, ...]] = []
        self.epoch_stats = {}

    def after_loss(self):
        if not self.training:
            return
        pred, yb = self.learn.pred, self.learn.yb
        if not isinstance(pred, torch.Tensor):
            raise TypeError(f"GRCallback needs the model to return one tensor of logits, got {type(pred).__name__}")
        if len(yb) != 1:
            raise ValueError(f"GRCallback needs exactly one target tensor per batch, got {len(yb)}")
        if not pred.is_floating_point():
            raise TypeError(f"GRCallback needs floating-point predictions (logits), got {pred.dtype}")
        terms = gr_terms(pred, yb[0], self.lam, self.beta, self.transform, self.normalize)
        # its gradient w.r.t. pred is exactly G; MixedPrecision/GradientAccumulation rescale it later
        self.learn.loss_grad = (terms.gradient.detach() * pred).sum()
        self._accumulate(terms)

    def after_train(self):
        # before the Recorder (order 50) reads the GRStat columns in its after_train/after_validate
        if self._n_batches:
            self.epoch_stats = {
                "spread": (self._sums["spread"] / self._n_batches).item(),
                "ess": (self._sums["ess"] / self._n_batches).item(),
                "mean_p": (self._sums["p"] / self._n_examples).item(),
            }

    def after_epoch(self):
        self.history.append({"epoch": self.epoch, **self.epoch_stats})
        if self.record_examples and self._records:
            cols = [torch.cat(c).cpu().numpy() for c in zip(*self._records)]
            self.examples = pd.DataFrame(dict(zip(("idx", "label", "p", "weight"), cols)))
        self._records = []

    def after_fit(self):
        self.learn.metrics = self._user_metrics

    # -- helpers ------------------------------------------------------------------------------------
    def _accumulate(self, terms):
        # device-side running sums: no host synchronisation until the epoch ends
        w, p = terms.weight.detach(), terms.p.detach()
        for key, v in (("spread", emphasis_spread(w)), ("ess", effective_sample_size(w)), ("p", p.sum())):
            self._sums[key] = self._sums[key] + v if key in self._sums else v
        self._n_batches += 1
        self._n_examples += p.numel()
        if self.record_examples:
            y = self.learn.yb[0]
            idx = batch_indices(self.learn.dl, self.learn.iter, y.shape[0])
            idx = idx.repeat_interleave(p.numel() // y.shape[0])  # one row per position for (B, C, *) logits
            # weights times the batch size: 1 is an average example, whatever the batch size
            self._records.append((idx, y.reshape(-1), p, w * w.numel()))


def batch_indices(
    dl,  # the DataLoader the batch came from
    it: int,  # the batch's number within the epoch
    bs: int,  # the batch's size
) -> torch.Tensor:  # (bs,) int64 on the CPU; -1 where the indices cannot be known
    """Dataset indices of the `it`-th batch of `dl`'s current epoch.

    fastai's `DataLoader` draws one index order per epoch and cuts it into consecutive batches (also with
    workers); a loader of another kind may expose that order as `epoch_indices`.
    """
    order = getattr(dl, "epoch_indices", None)
    if order is None:
        order = getattr(dl, "_DataLoader__idxs", None)
    full = getattr(dl, "bs", None) or bs
    if isinstance(order, (list, tuple, torch.Tensor)):
        chunk = order[it * full : it * full + bs]
        if len(chunk) == bs:
            return torch.as_tensor(chunk, dtype=torch.long).cpu()
    return torch.full((bs,), -1, dtype=torch.long)
