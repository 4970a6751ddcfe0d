"""A training made of several fits: fine-tuning's head alone, then the whole model (fastai's `fine_tune`), as one.

`fit_schedule` runs a training: `fit_one_cycle` from scratch, or the two fits of `Learner.fine_tune`. While it runs
the learner holds a `TrainingSpan` (`learn.training_span`, fastai's access by callback name) that knows the epochs
of the fits before the current one and of the whole training. Callbacks ask `training_span(learn)` (or `fit_epoch`,
`training_progress`, built on it), which answers for a plain `learn.fit` too (one fit, the whole training): GR's
warm-up, the collapse rule, the epoch numbers of metrics.csv and the epochs' random draws run across both fits.
"""

from __future__ import annotations

from fastai.callback.core import Callback
from fastai.callback.schedule import fit_one_cycle  # noqa: F401  (patches Learner.fit_one_cycle)

__all__ = ["TrainingSpan", "training_span", "fit_schedule", "fit_epoch", "total_epochs", "training_progress"]


class TrainingSpan(Callback):
    "Where the current fit sits in a training of several: `offset` epochs before it, `total` in all."

    def __init__(
        self,
        total: int,  # every epoch of the training
    ):
        self.total, self.offset = int(total), 0


def training_span(
    learn,  # a Learner inside a fit
) -> TrainingSpan:
    "The training the current fit belongs to: the learner's `TrainingSpan`, or in a plain fit that fit alone."
    span = getattr(learn, "training_span", None)  # fastai sets `learn.<name>` for each callback it holds
    return span if isinstance(span, TrainingSpan) else TrainingSpan(getattr(learn, "n_epoch", 1) or 1)


def fit_epoch(
    learn,  # a Learner inside a fit
) -> int:
    "The epoch being trained, counted over the whole training (the fits before this one included)."
    return training_span(learn).offset + learn.epoch


def total_epochs(
    learn,  # a Learner inside a fit
) -> int:
    "Every epoch of the training."
    return training_span(learn).total


def training_progress(
    learn,  # a Learner inside a fit
) -> float:
    "The fraction of the whole training done, per batch (fastai's `pct_train`, over every fit of the training)."
    span = training_span(learn)
    n = getattr(learn, "n_epoch", 1) or 1
    return (span.offset + getattr(learn, "pct_train", 1.0) * n) / span.total


def _freeze_to(learn, n: int, clear: bool) -> None:
    "`Learner.freeze_to(n)`, which also empties the optimiser's state: not when a resumed fit has just loaded it."
    if learn.opt is None:
        learn.create_opt()
    learn.opt.freeze_to(n)
    if clear:
        learn.opt.clear_state()


def fit_schedule(
    learn,  # from `gr_learner`
    epochs: int,  # epochs of the whole model (after the head's, when fine-tuning)
    lr: float,  # peak learning rate (of the head, when fine-tuning)
    finetune: bool = False,  # fastai's `fine_tune`: the head alone, then everything with discriminative rates
    freeze_epochs: int = 1,  # when fine-tuning: the head's epochs
    start_epoch: int = 0,  # epochs already trained (a resumed run), counted over the whole training
) -> None:
    """`fit_one_cycle(epochs, lr)`; or, fine-tuning, what `Learner.fine_tune` does: `freeze_epochs` of the new head
    (and batch-norm) alone, then `epochs` of the whole model at `slice(lr / 200, lr / 2)`. The two fits are one
    training for the callbacks (`TrainingSpan`)."""
    head = freeze_epochs if finetune else 0
    span = TrainingSpan(head + epochs)
    learn.add_cb(span)
    try:
        if head and start_epoch < head:
            _freeze_to(learn, -1, clear=start_epoch == 0)
            learn.fit_one_cycle(head, slice(lr), pct_start=0.99, start_epoch=start_epoch)
        span.offset = head
        start = max(0, start_epoch - head)
        if finetune:
            _freeze_to(learn, 0, clear=start_epoch <= head)
            base = lr / 2  # fastai's fine_tune halves the rate after the head's fit, and gives the body 1/100
            learn.fit_one_cycle(epochs, slice(base / 100, base), pct_start=0.3, div=5.0, start_epoch=start)
        else:
            learn.fit_one_cycle(epochs, lr, start_epoch=start)
    finally:  # a later fit of the same learner is a training of its own
        learn.remove_cb(span)
