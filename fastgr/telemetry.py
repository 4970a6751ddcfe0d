"""Per-epoch statistics of the training batches, shown as columns of fastai's training table.

fastai's `Recorder` builds the table from `learn.metrics`; a callback that mixes in `StatColumns` adds one
fastai `ValueMetric` per statistic there for the length of a fit, and fills in `epoch_stats` at `after_train`,
before the Recorder reads them. `FitMonitor` uses it to show how well training fits the given and the true labels.
"""

from __future__ import annotations

from functools import partial

import torch
from fastai.callback.core import Callback
from fastai.learner import AvgSmoothLoss, ValueMetric
from fastai.torch_core import to_detach

from .ranks import world_sum

__all__ = ["StatColumns", "FitMonitor", "DeviceSmoothLoss", "SmoothLossOnDevice", "batch_indices", "is_fitting",
           "training_table"]


def batch_indices(
    dl,  # the DataLoader the batch came from (`learn.dl`)
    it: int,  # the batch's number within the epoch (`learn.iter`)
    n: int,  # the batch's size
) -> torch.Tensor:  # (n,) int64, on the loader's device for `TensorDL`; -1 where the indices cannot be known
    """Dataset indices of the batch a training step is on: the one place GR's examples and `FitMonitor` get them.

    A loader that knows them exposes its last batch's indices as `batch_idx` and its pass's order as
    `epoch_indices` (`fastgr.loader.TensorDL` and `fastgr.stream.StreamDL` do); otherwise they are the pass's order
    cut into consecutive batches of `bs`."""
    idx = getattr(dl, "batch_idx", None)
    if isinstance(idx, torch.Tensor) and len(idx) == n:
        return idx
    order = getattr(dl, "epoch_indices", None)
    if order is None:  # fastai's own DataLoader keeps a pass's order only in this private attribute: no accessor
        order = getattr(dl, "_DataLoader__idxs", None)
    bs = getattr(dl, "bs", None) or n
    if isinstance(order, (list, tuple, torch.Tensor)):
        chunk = order[it * bs : it * bs + n]
        if len(chunk) == n:
            return torch.as_tensor(chunk, dtype=torch.long)
    return torch.full((n,), -1, dtype=torch.long)


def is_fitting(
    learn,  # a Learner, inside one of its events
) -> bool:
    """Whether the events come from `fit` rather than `validate` or `get_preds`, which fire `before_fit` too.

    fastai's own test: its validation context turns the progress bar's `create_mbar` off, and `get_preds`
    adds a `gather_preds` callback."""
    return bool(getattr(learn, "create_mbar", True)) and not hasattr(learn, "gather_preds")


class StatColumns:
    """Mixin for a `Callback` with per-epoch statistics named in `columns`, computed into `epoch_stats`.

    Each column is a fastai `ValueMetric` in `learn.metrics` for the length of a fit, so the Recorder shows
    and logs it like any metric; `validate` and `get_preds` keep the learner's own metrics only."""

    columns: tuple[str, ...] = ()
    epoch_stats: dict[str, float]

    def _stat(self, key: str):
        return self.epoch_stats.get(key)

    def add_columns(self, learn) -> None:
        "Call in `before_fit`: fastai's Recorder (order 50) reads `learn.metrics` in its own `before_fit`."
        self.epoch_stats = {}
        # a fit cut by an exception never reached `after_fit`: its columns, or those of a removed callback, go
        keep = [m for m in learn.metrics if getattr(m, "stat_owner", None) is None or
                (m.stat_owner is not self and m.stat_owner in learn.cbs)]
        cols = []
        if is_fitting(learn):
            for k in self.columns:
                col = ValueMetric(partial(self._stat, k), k)
                col.stat_owner = self
                cols.append(col)
        learn.metrics = keep + cols

    def remove_columns(self, learn) -> None:
        "Call in `after_fit`: the learner's own metrics come back."
        learn.metrics = [m for m in learn.metrics if getattr(m, "stat_owner", None) is not self]


class FitMonitor(StatColumns, Callback):
    """Fit of the training batches to the given (noisy) labels and, where known, to the true ones, per epoch.

    Adds the column `train_acc_given` (and `train_acc_true` when given the true labels): accuracy of the model's
    predictions on the (augmented) training batches as it trains, against each labelling. Memorising wrong labels
    shows as `train_acc_given` rising while `train_acc_true` falls.
    """

    run_valid = False

    def __init__(
        self,
        true_labels: torch.Tensor | None = None,  # (N,) the true label of every training example, by dataset index
    ):
        self.true_labels = None if true_labels is None else torch.as_tensor(true_labels, dtype=torch.long)
        self.columns = ("train_acc_given",) if true_labels is None else ("train_acc_given", "train_acc_true")
        self.epoch_stats = {}

    def before_fit(self):
        self.add_columns(self.learn)

    def before_epoch(self):
        self._given = self._true = None
        self._n = 0
        self.epoch_stats = {}

    def after_loss(self):
        if not self.training:
            return
        pred = self.learn.pred.detach().argmax(1)
        y = self.learn.yb[0]
        given = (pred == y).sum()
        # device-side sums: no host synchronisation until the epoch ends
        self._given = given if self._given is None else self._given + given
        if self.true_labels is not None:
            idx = batch_indices(self.learn.dl, self.learn.iter, len(y))
            if self.true_labels.device != y.device:
                self.true_labels = self.true_labels.to(y.device)
            true = (pred == self.true_labels[idx.to(y.device)]).sum()
            self._true = true if self._true is None else self._true + true
        self._n += len(y)

    def after_train(self):
        if self._n:
            # over every rank of a launch: one all-reduce an epoch (alone, the sums themselves)
            given = self._given.double()
            true = given.new_zeros(()) if self._true is None else self._true.double()
            given, n, true = world_sum(torch.stack([given, given.new_tensor(float(self._n)), true])).tolist()
            self.epoch_stats = {"train_acc_given": given / n}
            if self._true is not None:
                self.epoch_stats["train_acc_true"] = true / n

    def after_fit(self):
        self.remove_columns(self.learn)


class DeviceSmoothLoss(AvgSmoothLoss):
    "fastai's smoothed training loss, left on the loss's device (fastai's copies it to the host: a sync a step)."

    def accumulate(self, learn):
        self.count += 1
        loss = to_detach(learn.loss.mean(), cpu=False).float()
        if self.val.device != loss.device:  # a host value (the start, an epoch's end, a checkpoint's): a fill
            self.val = torch.full_like(loss, float(self.val))  # kernel on the device, not a copy from the host
        self.val = torch.lerp(loss, self.val, self.beta)


class SmoothLossOnDevice(Callback):
    """Gives fastai's `Recorder` a `DeviceSmoothLoss`, and moves the epoch's smoothed losses (`recorder.losses`,
    for `plot_loss`) and the running value (for checkpoints) to the host once an epoch, after the Recorder."""

    order = 60  # before_fit after the Recorder's reset (50), before a resumed run's restore (`RunLog`, 70)

    def before_fit(self):
        rec = self.learn.recorder
        if not isinstance(rec.smooth_loss, DeviceSmoothLoss):
            # not `rec.smooth_loss = ...`: fastai warns of a callback attribute named like the learner's
            smooth = rec.__dict__["smooth_loss"] = DeviceSmoothLoss(rec.smooth_loss.beta)
            smooth.reset()  # the Recorder reset its own already; fastai before 2.8.2 sets count and val only there

    def before_train(self):
        self._start = len(self.learn.recorder.losses)

    def after_train(self):
        rec = self.learn.recorder
        tail = rec.losses[self._start:]
        if tail and isinstance(tail[0], torch.Tensor) and tail[0].device.type != "cpu":
            rec.losses[self._start:] = list(torch.stack(tail).cpu())
        rec.smooth_loss.val = rec.smooth_loss.val.cpu()


def training_table(
    learn,  # a Learner after `fit`
):  # pandas DataFrame, one row per epoch
    "fastai's training table (the Recorder's values, GR's columns included) as a DataFrame."
    import pandas as pd

    names = [n for n in learn.recorder.metric_names[1:] if n != "time"]
    rows = [dict(zip(names, (None if v is None else float(v) for v in values))) for values in learn.recorder.values]
    return pd.DataFrame(rows, index=pd.RangeIndex(1, len(rows) + 1, name="epoch"))
