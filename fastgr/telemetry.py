"""Per-epoch statistics of the training batches, shown as columns of fastai's training table.

fastai's `Recorder` builds the table from `learn.metrics`; a callback that mixes in `StatColumns` adds one
`EpochStat` per statistic there for the length of a fit, and fills in `epoch_stats` at `after_train`, before
the Recorder reads them. `FitMonitor` uses it to show how well training fits the given and the true labels.
"""

from __future__ import annotations

import sys

import torch
from fastai.callback.core import Callback
from fastai.learner import Metric

__all__ = ["EpochStat", "StatColumns", "FitMonitor", "batch_indices", "training_table"]


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


def _fitting(learn) -> bool:
    "Whether `Learner.fit` of `learn` is on the call stack (rather than `validate` or `get_preds`)."
    frame = sys._getframe(1)
    while frame is not None:
        if frame.f_code.co_name == "fit" and frame.f_locals.get("self") is learn:
            return True
        frame = frame.f_back
    return False


class EpochStat(Metric):
    "One column of the training table; its value is `owner.epoch_stats[key]` (None until computed)."

    def __init__(self, owner: StatColumns, key: str):
        self.owner, self.key = owner, key

    @property
    def name(self) -> str:
        return self.key

    @property
    def value(self):
        return self.owner.epoch_stats.get(self.key)


class StatColumns:
    "Mixin for a `Callback` with per-epoch statistics named in `columns`, computed into `epoch_stats`."

    columns: tuple[str, ...] = ()
    epoch_stats: dict[str, float]

    def add_columns(self, learn) -> None:
        """Call in `before_fit`: fastai's Recorder (order 50) reads `learn.metrics` in its own `before_fit`.

        Only for a real `fit`: `validate` and `get_preds` fire `before_fit` too, and must return only the
        learner's own metrics."""
        self.epoch_stats = {}
        keep = [m for m in learn.metrics if not (isinstance(m, EpochStat) and
                                                 (m.owner is self or m.owner not in learn.cbs))]
        learn.metrics = keep + ([EpochStat(self, k) for k in self.columns] if _fitting(learn) else [])

    def remove_columns(self, learn) -> None:
        "Call in `after_fit`: the learner's own metrics come back."
        learn.metrics = [m for m in learn.metrics if not (isinstance(m, EpochStat) and m.owner is self)]


class FitMonitor(StatColumns, Callback):
    """Fit of the training batches to the given (noisy) labels and to the true ones, per epoch.

    Adds the columns `train_acc_given` and `train_acc_true`: accuracy of the model's predictions on the
    (augmented) training batches as it trains, against each labelling. Memorising wrong labels shows as
    `train_acc_given` rising while `train_acc_true` falls.
    """

    columns = ("train_acc_given", "train_acc_true")
    run_valid = False

    def __init__(
        self,
        true_labels: torch.Tensor,  # (N,) the true label of every training example, by dataset index
    ):
        self.true_labels = torch.as_tensor(true_labels, dtype=torch.long)
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
        idx = getattr(self.learn.dl, "batch_idx", None)
        if idx is None or len(idx) != len(y):
            idx = batch_indices(self.learn.dl, self.learn.iter, len(y))
        if self.true_labels.device != y.device:
            self.true_labels = self.true_labels.to(y.device)
        given, true = (pred == y).sum(), (pred == self.true_labels[idx.to(y.device)]).sum()
        # device-side sums: no host synchronisation until the epoch ends
        self._given = given if self._given is None else self._given + given
        self._true = true if self._true is None else self._true + true
        self._n += len(y)

    def after_train(self):
        if self._n:
            self.epoch_stats = {"train_acc_given": self._given.item() / self._n,
                                "train_acc_true": self._true.item() / self._n}

    def after_fit(self):
        self.remove_columns(self.learn)


def training_table(
    learn,  # a Learner after `fit`
):  # pandas DataFrame, one row per epoch
    "fastai's training table (the Recorder's values, GR's columns included) as a DataFrame."
    import pandas as pd

    names = [n for n in learn.recorder.metric_names[1:] if n != "time"]
    rows = [dict(zip(names, (None if v is None else float(v) for v in values))) for values in learn.recorder.values]
    return pd.DataFrame(rows, index=pd.RangeIndex(1, len(rows) + 1, name="epoch"))
