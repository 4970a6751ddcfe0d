"""`GRCallback`: gradient rescaling for any fastai `Learner` that classifies with integer labels."""

from __future__ import annotations

import types
import warnings

import pandas as pd
import torch
from fastai.callback.core import Callback
from fastai.callback.mixup import MixHandler
from fastai.callback.training import GradientAccumulation

from .gradient import NON_FINITE, REFERENCE_EPS, check_settings, effective_sample_size, emphasis_spread, gr_terms
from .presets import WARMUP_MODES
from .ranks import group_size, world_gather, world_sum
from .telemetry import StatColumns, batch_indices, fit_epoch, is_fitting

__all__ = ["GRCallback", "EmphasisCollapseWarning", "WARMUP_MODES", "ESS_COLLAPSE", "FIT_COLLAPSE", "COLLAPSE_STEPS",
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
    "The emphasis-collapse rule of docs/design.md; `GRCallback` applies it as epochs end, benches to saved metrics."
    out: list[int] = []
    streak: list[tuple[int, int]] = []
    for i, (ess, mean_p, n) in enumerate(epochs):
        streak = streak + [(i, n)] if is_starved(ess, mean_p, n_classes, ess_threshold, fit_threshold) else []
        if streak and sum(k for _, k in streak) >= steps:
            out.extend(j for j, _ in streak if j not in out)
    return out


def _distributed() -> bool:
    "Whether training runs on several torch.distributed ranks (DDP): GR then normalises over the global batch."
    return group_size() > 1


def _check_loss(loss) -> None:
    """GR replaces the gradient of the learner's loss with its own: refuse a loss whose own terms would silently
    have no effect, warn about a loss it does not know. Plain cross-entropy (fastai's or torch's) passes."""
    from fastai.losses import CrossEntropyLossFlat, FocalLoss, LabelSmoothingCrossEntropy
    from torch import nn

    f = getattr(loss, "func", loss)  # fastai's flattened losses wrap a torch one
    name = loss.__name__ if isinstance(loss, types.FunctionType) else type(loss).__name__
    why = None
    if isinstance(f, FocalLoss) or "focal" in name.lower():
        why = "its focal term re-weights examples, and GR's gradient has weights of its own"
    elif isinstance(f, LabelSmoothingCrossEntropy) or getattr(f, "label_smoothing", 0):  # fastai's, or torch's
        why = "label smoothing trains on soft targets, and GR is defined for integer labels"
    elif getattr(f, "weight", None) is not None:
        why = "its class weights would be ignored: GR's gradient has example weights of its own"
    if why:
        raise ValueError(f"GRCallback cannot train with {name}: {why}; use CrossEntropyLossFlat() (the logged loss)")
    if not isinstance(loss, CrossEntropyLossFlat) and not isinstance(f, nn.CrossEntropyLoss) and \
            f is not torch.nn.functional.cross_entropy:
        warnings.warn(f"GRCallback replaces the gradient of {name} with GR's own; {name} is still the loss that is "
                      "logged", UserWarning, stacklevel=3)


class EmphasisCollapseWarning(UserWarning):
    "GR's weights concentrated on so few examples that training starves."


class GRCallback(StatColumns, Callback):
    """Gradient rescaling (GR): the gradient sent into the logits becomes `G` of `gr_gradient`.

    Acts in `after_loss` on training batches: `learn.loss_grad` becomes a surrogate whose gradient w.r.t.
    `learn.pred` is `G`, while `learn.loss` (what is logged) stays the learner's own loss. Under DDP
    (`learn.distrib_ctx()`, torchrun, accelerate) the weights are normalised over the global batch. Adds three columns
    to the training table, means over the epoch's training batches: `gr_spread` (emphasis spread),
    `gr_ess` (effective sample size as a fraction of the batch) and `gr_mean_p` (probability of the
    given label).
    """

    columns = ("gr_spread", "gr_ess", "gr_mean_p")
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
        eps: float = REFERENCE_EPS,  # the reference layer's saturation (see `gr_gradient`); 0: bare formula
        warmup: float = 0.0,  # fraction of training over which GR takes over from cross-entropy; 0: GR from the start
        warmup_mode: str = "blend",  # blend: a*G_GR + (1-a)*G_CE; ramp: lam, beta from (0, 2) to (lam, beta)
        ess_threshold: float | None = ESS_COLLAPSE,  # warn when an epoch's mean gr_ess is below it; None: never
        fit_threshold: float = FIT_COLLAPSE,  # ... while its mean p_i is below this many times chance (1 / C)
        collapse_steps: int = COLLAPSE_STEPS,  # ... for epochs in a row that add up to at least this many steps
    ):
        lam, beta, eps = check_settings(lam, beta, transform, normalize, eps)
        if not 0 <= warmup <= 1:
            raise ValueError(f"warmup must be a fraction of training in [0, 1], got {warmup}")
        if warmup_mode not in WARMUP_MODES:
            raise ValueError(f"unknown warmup_mode {warmup_mode!r}; choose one of {', '.join(WARMUP_MODES)}")
        if ess_threshold is not None and not 0 < ess_threshold <= 1:
            raise ValueError(f"ess_threshold is a fraction of the batch in (0, 1], or None; got {ess_threshold}")
        if not fit_threshold > 0 or int(collapse_steps) != collapse_steps or collapse_steps < 1:
            raise ValueError(f"fit_threshold must be > 0 and collapse_steps a whole number >= 1, got "
                             f"{fit_threshold} and {collapse_steps}")
        self.lam, self.beta, self.transform, self.normalize, self.eps = lam, beta, transform, normalize, eps
        self.warmup, self.warmup_mode, self.ess_threshold = warmup, warmup_mode, ess_threshold
        self.fit_threshold, self.collapse_steps = fit_threshold, collapse_steps
        self.collapsed_epochs: list[int] = []
        self.record_examples = record_examples
        self.epoch_stats: dict[str, float] = {}
        self.history: list[dict[str, float]] = []
        self.examples: pd.DataFrame | None = None

    # -- events -------------------------------------------------------------------------------------
    def before_fit(self):
        if is_fitting(self.learn):  # not again for every validate or get_preds
            if sum(isinstance(cb, GRCallback) for cb in self.learn.cbs) > 1:
                raise ValueError("a Learner takes one GRCallback; two would each replace the other's gradient")
            _check_loss(self.learn.loss_func)
        mixers = [type(cb).__name__ for cb in self.learn.cbs if isinstance(cb, MixHandler)]
        if mixers:
            raise ValueError(
                f"GRCallback cannot train with {', '.join(mixers)}: it mixes labels into soft targets, and GR "
                "is defined for integer class labels only; remove one of the two callbacks"
            )
        self.add_columns(self.learn)
        self._warned = False

    def progress(self) -> float:
        """How far GR has taken over: 0 at the start of training, 1 once the warm-up is over. Training is the fit,
        or every fit of a `fit_schedule` (fine-tuning's two): one warm-up over all of them."""
        if self.warmup <= 0:
            return 1.0
        learn = self.learn
        n = getattr(learn, "n_epoch", 1) or 1
        done = getattr(learn, "fit_offset", 0) + getattr(learn, "pct_train", 1.0) * n
        return min(1.0, done / (getattr(learn, "total_epochs", None) or n) / self.warmup)

    def before_train(self):
        # after fastai's TrainEvalCallback (order -10) has set pct_train to epoch / n_epoch
        self._warmed_up = self.progress() >= 1.0  # the whole epoch is plain GR

    def before_epoch(self):
        self._warmed_up = False
        self._sums: dict[str, torch.Tensor] = {}
        self._n_batches = self._n_examples = self._n_classes = 0
        self._records: list[tuple[torch.Tensor, ...]] = []
        self._moments: list[torch.Tensor] = []  # per step (sum w, sum w^2, examples), kept under several ranks
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
        y = yb[0]
        expected = pred.shape[:1] + pred.shape[2:]
        if isinstance(y, torch.Tensor) and y.shape != expected and y.numel() == expected.numel():
            y = y.reshape(expected)  # e.g. fastai tabular's (B, 1) targets, flattened as CrossEntropyLossFlat does
        self._n_classes = pred.shape[1]
        a, world = self.progress(), _distributed()
        lam, beta, mix = self.lam, self.beta, 1.0
        if a < 1 and self.warmup_mode == "blend":
            mix = a
        elif a < 1:  # ramp from a cross-entropy-like emphasis (lam 0, beta 2: the hardest examples weigh most)
            lam, beta = a * self.lam, 2.0 + a * (self.beta - 2.0)
        try:
            terms = gr_terms(pred, y, lam, beta, self.transform, self.normalize, self.eps, mix=mix, world=world)
        except RuntimeError as e:
            if NON_FINITE not in str(e):
                raise
            raise FloatingPointError(f"training diverged at epoch {fit_epoch(self.learn) + 1}, batch {self.iter + 1}: "
                                     f"{NON_FINITE}; lower --lr (the learning rate)") from None
        # its gradient w.r.t. pred is exactly G; MixedPrecision/GradientAccumulation rescale it later
        self.learn.loss_grad = (terms.gradient.detach() * pred).sum()
        self._accumulate(terms)

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
        "Whether an epoch with these means looks starved, by this callback's thresholds (`is_starved`)."
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
            ess, mean_p = self.epoch_stats["gr_ess"], self.epoch_stats["gr_mean_p"]
            run = next(k for k in range(1, len(post) + 1) if k == len(post) or post[-k - 1]["epoch"] not in found)
            warnings.warn(
                f"emphasis collapse: lower beta or lam, or use warm-up (epoch {epoch + 1}: the batches' "
                f"effective sample size averaged {ess:.3f} of the batch, below {self.ess_threshold:g}, while the "
                f"mean probability of the given labels, {mean_p:.3f}, stayed below {self.fit_threshold:g}x chance, "
                f"for {run} epochs in a row; lam={self.lam:g}, beta={self.beta:g}); later epochs are "
                "counted in collapsed_epochs",
                EmphasisCollapseWarning, stacklevel=2)

    def _accumulate(self, terms):
        # device-side running sums: no host synchronisation until the epoch ends
        w, p = terms.weight.detach(), terms.p.detach()
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
