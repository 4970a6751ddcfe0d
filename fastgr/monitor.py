"""`EmphasisMonitor`: what GR's weights did, epoch by epoch: the table's columns, the emphasis-collapse rule and its
warning, and (on request) every training example's last-epoch weight.

It changes no gradient: it reads the terms `GRCallback` publishes at each training step (`learn.gr.terms`), so a
Learner may hold GR without it (the gradient alone) or both (`gr_learner` adds both).
"""

from __future__ import annotations

import warnings

import pandas as pd
import torch
from fastai.callback.core import Callback

from .callback import GRCallback
from .emphasis import effective_sample_size, emphasis_spread
from .ranks import group_size, world_gather, world_sum
from .schedule import fit_epoch
from .telemetry import StatColumns, batch_indices

__all__ = ["EmphasisMonitor", "EmphasisCollapseWarning", "ESS_COLLAPSE", "FIT_COLLAPSE", "COLLAPSE_STEPS",
           "is_starved", "collapsed_epochs"]

# the emphasis-collapse rule's three numbers; docs/design.md ("what counts as an emphasis collapse") has the
# runs of BENCHMARKS.md they were chosen on
ESS_COLLAPSE = 0.3  # an epoch's mean effective sample size, as a fraction of the batch, below this ...
FIT_COLLAPSE = 2.0  # ... while the mean p_i of the given labels stays below this many times chance (1 / C) ...
COLLAPSE_STEPS = 100  # ... for epochs in a row that add up to at least this many training steps


def is_starved(
    ess: float,  # an epoch's mean effective sample size, as a fraction of the batch (`gr_ess`)
    mean_p: float,  # its mean probability of the given labels (`gr_mean_p`)
    n_classes: int,  # classes of the task: chance is 1 / n_classes
    ess_threshold: float = ESS_COLLAPSE,  # ESS below this ...
    fit_threshold: float = FIT_COLLAPSE,  # ... while mean_p stays below this many times chance
) -> bool:
    "Whether an epoch looks starved: few examples carry its batches, and the given labels are not being learnt."
    return n_classes >= 2 and ess < ess_threshold and mean_p < fit_threshold / n_classes


def collapsed_epochs(
    epochs: list[tuple[float, float, int]],  # (gr_ess, gr_mean_p, training steps) of consecutive post-warm-up epochs
    n_classes: int,  # classes of the task
    ess_threshold: float = ESS_COLLAPSE,  # see `is_starved`
    fit_threshold: float = FIT_COLLAPSE,  # see `is_starved`
    steps: int = COLLAPSE_STEPS,  # a run of starved epochs is a collapse once it adds up to this many steps
) -> list[int]:  # positions in `epochs` of every epoch in such a run
    "The emphasis-collapse rule (docs/design.md): `EmphasisMonitor` applies it as epochs end, benches to saved metrics."
    out: list[int] = []
    streak: list[tuple[int, int]] = []
    for i, (ess, mean_p, n) in enumerate(epochs):
        streak = streak + [(i, n)] if is_starved(ess, mean_p, n_classes, ess_threshold, fit_threshold) else []
        if streak and sum(k for _, k in streak) >= steps:
            out.extend(j for j, _ in streak if j not in out)
    return out


class EmphasisCollapseWarning(UserWarning):
    "GR's weights concentrated on so few examples that training starves."


class EmphasisMonitor(StatColumns, Callback):
    """The learner's `GRCallback` watched, epoch by epoch. Adds three columns to the training table, means over the
    epoch's training batches: `gr_spread` (emphasis spread), `gr_ess` (effective sample size as a fraction of the
    batch) and `gr_mean_p` (probability of the given label); warns (`EmphasisCollapseWarning`) when the epochs after
    the warm-up look starved (`collapsed_epochs`); with `record_examples`, keeps `examples`, each training example's
    (dataset index, label, p_i, weight) of the last epoch. Under DDP the statistics are those of the global batch."""

    columns = ("gr_spread", "gr_ess", "gr_mean_p")
    order = GRCallback.order + 1  # reads the terms GR's `after_loss` has just published
    run_valid = False

    def __init__(
        self,
        record_examples: bool = False,  # keep (dataset index, label, p_i, weight) of the last epoch's examples
        ess_threshold: float | None = ESS_COLLAPSE,  # warn when an epoch's mean gr_ess is below it; None: never
        fit_threshold: float = FIT_COLLAPSE,  # ... while its mean p_i is below this many times chance (1 / C)
        collapse_steps: int = COLLAPSE_STEPS,  # ... for epochs in a row that add up to at least this many steps
    ):
        if ess_threshold is not None and not 0 < ess_threshold <= 1:
            raise ValueError(f"ess_threshold is a fraction of the batch in (0, 1], or None; got {ess_threshold}")
        if not fit_threshold > 0 or int(collapse_steps) != collapse_steps or collapse_steps < 1:
            raise ValueError(f"fit_threshold must be > 0 and collapse_steps a whole number >= 1, got "
                             f"{fit_threshold} and {collapse_steps}")
        self.record_examples, self.ess_threshold = record_examples, ess_threshold
        self.fit_threshold, self.collapse_steps = fit_threshold, collapse_steps
        self.collapsed_epochs: list[int] = []
        self.epoch_stats: dict[str, float] = {}
        self.history: list[dict[str, float]] = []
        self.examples: pd.DataFrame | None = None

    def _gr(self) -> GRCallback | None:
        return next((cb for cb in self.learn.cbs if isinstance(cb, GRCallback)), None)

    # -- events -------------------------------------------------------------------------------------
    def before_fit(self):
        self.add_columns(self.learn)
        self._warned = False

    def before_epoch(self):
        self._sums: dict[str, torch.Tensor] = {}
        self._n_batches = self._n_examples = self._n_classes = 0
        self._records: list[tuple[torch.Tensor, ...]] = []
        self._moments: list[torch.Tensor] = []  # per step (sum w, sum w^2, examples), kept under several ranks
        self.epoch_stats = {}

    def before_train(self):
        gr = self._gr()
        self._warmed_up = gr is not None and gr.progress() >= 1.0  # the whole epoch is plain GR

    def after_loss(self):
        gr = self._gr()
        if not self.training or gr is None or gr.terms is None:
            return
        # device-side running sums: no host synchronisation until the epoch ends
        w, p = gr.terms.weight.detach(), gr.terms.p.detach()
        self._n_classes = self.learn.pred.shape[1]
        ranks = group_size()
        # alone, the batch's own statistics; under several ranks, a rank's weights are only its share of the global
        # batch's: their moments are kept per step and summed over the ranks at epoch end
        stats = (("spread", emphasis_spread(w)), ("ess", effective_sample_size(w))) if ranks == 1 else ()
        for key, v in (*stats, ("p", p.sum())):
            self._sums[key] = self._sums[key] + v if key in self._sums else v
        self._n_batches += 1
        self._n_examples += p.numel()
        if ranks > 1:
            w64 = w.double()
            # the count as a fill kernel: `new_tensor` would copy it from the host, which can wait for the device
            n = torch.full((), float(w.numel()), dtype=w64.dtype, device=w64.device)
            self._moments.append(torch.stack([w64.sum(), w64.square().sum(), n]))
        if self.record_examples:
            y = self.learn.yb[0]
            idx = batch_indices(self.learn.dl, self.learn.iter, y.shape[0]).to(p.device)
            idx = idx.repeat_interleave(p.numel() // y.shape[0])  # one row per position for (B, C, *) logits
            # weights times the batch size: 1 is an average example, whatever the batch size
            self._records.append((idx, y.reshape(-1), p, w * (w.numel() * ranks)))

    def after_train(self):
        # before the Recorder (order 50) reads the columns in its after_train/after_validate; only training
        # epochs get here (fastai's validate/get_preds fire fit and epoch events too)
        if not self._n_batches:
            return
        if self._moments:  # several ranks: each step's statistics are those of its global batch
            m = world_sum(torch.stack(self._moments))  # (steps, 3): sum w, sum w^2, examples, over the ranks
            ess = m[:, 0].square() / m[:, 1] / m[:, 2]
            p, n = world_sum(torch.stack([self._sums["p"].double(), self._sums["p"].new_tensor(
                float(self._n_examples), dtype=torch.float64)])).tolist()
            self.epoch_stats = {"gr_spread": (1 / ess - 1).mean().item(), "gr_ess": ess.mean().item(),
                                "gr_mean_p": p / n}
        else:
            self.epoch_stats = {
                "gr_spread": (self._sums["spread"] / self._n_batches).item(),
                "gr_ess": (self._sums["ess"] / self._n_batches).item(),
                "gr_mean_p": (self._sums["p"] / self._n_examples).item(),
            }
        self.history.append({"epoch": fit_epoch(self.learn), **self.epoch_stats, "steps": self._n_batches,
                             "warmed_up": self._warmed_up})
        self._check_collapse()
        if self.record_examples and self._records:
            # every rank's examples (equal shares: `ShardDL`), in rank order
            cols = [world_gather(torch.cat(c)).cpu().numpy() for c in zip(*self._records)]
            self.examples = pd.DataFrame(dict(zip(("idx", "label", "p", "weight"), cols)))
        self._records = []

    def after_fit(self):
        self.remove_columns(self.learn)

    # -- state, for a run that resumes -----------------------------------------------------------
    def state_dict(self) -> dict:
        "What a resumed fit needs to go on as the uninterrupted one would: the per-epoch history and examples."
        return {"history": list(self.history), "collapsed_epochs": list(self.collapsed_epochs),
                "examples": self.examples}

    def load_state_dict(self, state: dict) -> None:
        self.history = list(state.get("history", []))
        self.collapsed_epochs = list(state.get("collapsed_epochs", []))
        self.examples = state.get("examples")

    # -- the collapse rule ------------------------------------------------------------------------
    def is_collapse(self, ess: float, mean_p: float, n_classes: int) -> bool:
        "Whether an epoch with these means looks starved, by this monitor's thresholds (`is_starved`)."
        return self.ess_threshold is not None and is_starved(ess, mean_p, n_classes, self.ess_threshold,
                                                             self.fit_threshold)

    def collapsed_in(self, epochs: list[tuple[float, float, int]], n_classes: int) -> list[int]:
        "Positions of `epochs`, (gr_ess, gr_mean_p, steps) each, that this rule counts as collapsed (post warm-up)."
        if self.ess_threshold is None:
            return []
        return collapsed_epochs(epochs, n_classes, self.ess_threshold, self.fit_threshold, self.collapse_steps)

    def _check_collapse(self):
        # the rule over the epochs since the warm-up ended (a second training, not a fit_schedule's, warms up again)
        post: list[dict] = []
        for h in self.history:
            post = post + [h] if h["warmed_up"] else []
        found = [post[i]["epoch"] for i in self.collapsed_in(
            [(h["gr_ess"], h["gr_mean_p"], h["steps"]) for h in post], self._n_classes)]
        new = [e for e in found if e not in self.collapsed_epochs]
        self.collapsed_epochs.extend(new)
        epoch = fit_epoch(self.learn)
        if epoch in new and not self._warned:
            self._warned = True
            gr = self._gr()
            lam, beta = gr.setting()
            ess, mean_p = self.epoch_stats["gr_ess"], self.epoch_stats["gr_mean_p"]
            run = next(k for k in range(1, len(post) + 1) if k == len(post) or post[-k - 1]["epoch"] not in found)
            warnings.warn(
                f"emphasis collapse: lower beta or lam, or use warm-up (epoch {epoch + 1}: the batches' "
                f"effective sample size averaged {ess:.3f} of the batch, below {self.ess_threshold:g}, while the "
                f"mean probability of the given labels, {mean_p:.3f}, stayed below {self.fit_threshold:g}x chance, "
                f"for {run} epochs in a row; lam={lam:g}, beta={beta:g}); later epochs are "
                "counted in collapsed_epochs",
                EmphasisCollapseWarning, stacklevel=2)
