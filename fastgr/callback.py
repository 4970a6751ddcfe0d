"""`GRCallback`: gradient rescaling for any fastai `Learner` that classifies with integer labels."""

from __future__ import annotations

import types
import warnings

import torch
from fastai.callback.core import Callback
from fastai.callback.mixup import MixHandler
from fastai.callback.training import GradientAccumulation

from .gradient import NON_FINITE, REFERENCE_EPS, GRTerms, check_settings, gr_terms
from .handover import Handover
from .presets import AUTO, WARMUP_MODES
from .ranks import group_size
from .schedule import fit_epoch, training_progress
from .signals import NoiseSignals
from .telemetry import is_fitting

__all__ = ["GRCallback", "WARMUP_MODES"]


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


class GRCallback(Callback):
    """Gradient rescaling (GR): the gradient sent into the logits becomes `G` of `gr_gradient`.

    Acts in `after_loss` on training batches: `learn.loss_grad` becomes a surrogate whose gradient w.r.t.
    `learn.pred` is `G`, while `learn.loss` (what is logged) stays the learner's own loss. Under DDP
    (`learn.distrib_ctx()`, torchrun, accelerate) the weights are normalised over the global batch. The step's terms
    (weights, p_i, gradient: `GRTerms`) are published as `terms` for callbacks ordered after it, such as
    `fastgr.monitor.EmphasisMonitor`, which turns them into the training table's columns and the collapse warning.

    With neither `lam` nor `beta` the setting is automatic (`fastgr.handover`): lam 0.5 / beta 8 from the second
    epoch where the network is competent from its first (a fine-tune), lam 1 / beta 16 blended in from the start
    on a long training, else cross-entropy until the run's own signals say the network starts to fit the labels it
    contradicted, then lam 1 / beta 16 blended in. Given to the Learner when it is made
    (`Learner(..., cbs=[GRCallback()])`, `vision_learner(..., cbs=...)`), it adds the `Handover` that decides and the
    `NoiseSignals` it reads, where the learner has none.
    """

    # before GradientAccumulation (which rescales `loss_grad` in its own `after_loss`) and MixedPrecision
    order = GradientAccumulation.order - 1
    run_valid = False

    def __init__(
        self,
        lam: float | None = 0.5,  # emphasis focus parameter: the largest weight goes to p = lam / (1 + lam); >= 0;
        # None (with beta None): the automatic setting
        beta: float | None = 8.0,  # emphasis spread parameter: 0 weights every example alike; >= 0
        transform: str = "exp",  # "exp" (GR) or "identity": `g` in w = g(beta * p**lam * (1 - p))
        normalize: str = "sum",  # "sum": weights normalised over the batch; "mean": divided by the batch size
        eps: float = REFERENCE_EPS,  # the reference layer's saturation (see `gr_gradient`); 0: bare formula
        warmup: float = 0.0,  # fraction of training over which GR takes over from cross-entropy; 0: GR from the start
        warmup_mode: str = "blend",  # blend: a*G_GR + (1-a)*G_CE; ramp: lam, beta from (0, 2) to (lam, beta)
    ):
        if (lam is None) != (beta is None):
            raise ValueError("give both lam and beta, or neither (the automatic setting)")
        self.auto = lam is None
        if self.auto and warmup:
            raise ValueError("the automatic setting (no lam, no beta) decides its own handover: warmup must be 0")
        lam, beta, eps = check_settings(AUTO.lam if self.auto else lam, AUTO.beta if self.auto else beta,
                                        transform, normalize, eps)
        if not 0 <= warmup <= 1:
            raise ValueError(f"warmup must be a fraction of training in [0, 1], got {warmup}")
        if warmup_mode not in WARMUP_MODES:
            raise ValueError(f"unknown warmup_mode {warmup_mode!r}; choose one of {', '.join(WARMUP_MODES)}")
        self.lam, self.beta, self.transform, self.normalize, self.eps = lam, beta, transform, normalize, eps
        self.warmup, self.warmup_mode = warmup, warmup_mode
        self.terms: GRTerms | None = None  # the last training step's terms

    def after_create(self):
        if self.auto:  # what the automatic setting reads and decides with, where the learner has none
            have = {type(cb) for cb in self.learn.cbs}
            n = len(self.learn.dls.train.dataset)
            self.learn.add_cbs([cb for cb in (NoiseSignals(n), Handover()) if type(cb) not in have])

    def before_fit(self):
        if is_fitting(self.learn):  # not again for every validate or get_preds
            if self.auto and not isinstance(getattr(self.learn, "handover", None), Handover):
                raise ValueError("GRCallback() with no lam and beta (automatic) needs fastgr's Handover and "
                                 "NoiseSignals: pass it to the Learner when it is made (cbs=[GRCallback()]), or add "
                                 "those two")
            if sum(isinstance(cb, GRCallback) for cb in self.learn.cbs) > 1:
                raise ValueError("a Learner takes one GRCallback; two would each replace the other's gradient")
            _check_loss(self.learn.loss_func)
        mixers = [type(cb).__name__ for cb in self.learn.cbs if isinstance(cb, MixHandler)]
        if mixers:
            raise ValueError(
                f"GRCallback cannot train with {', '.join(mixers)}: it mixes labels into soft targets, and GR "
                "is defined for integer class labels only; remove one of the two callbacks"
            )

    def progress(self) -> float:
        """How far GR has taken over: 0 at the start of training, 1 once the warm-up is over (automatic: once the
        handover's blend is). Training is the fit, or every fit of a `fit_schedule` (fine-tuning's two): one
        warm-up over all of them."""
        if self.auto:
            return self.learn.handover.share()
        return 1.0 if self.warmup <= 0 else min(1.0, training_progress(self.learn) / self.warmup)

    def setting(self) -> tuple[float, float]:
        "GR's (lam, beta) now: those given, or (automatic) those `Handover` decided on."
        return self.learn.handover.setting() if self.auto else (self.lam, self.beta)

    def after_loss(self):
        if not self.training:
            return
        if self.auto and self.learn.handover.cross_entropy():  # the learner's own loss and gradient, to the bit
            self.terms = None
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
        a = self.progress()
        (lam, beta), mix = self.setting(), 1.0
        if a < 1 and self.warmup_mode == "blend":
            mix = a
        elif a < 1:  # ramp from a cross-entropy-like emphasis (lam 0, beta 2: the hardest examples weigh most)
            lam, beta = a * lam, 2.0 + a * (beta - 2.0)
        try:  # several ranks (DDP): the weights normalised over the global batch
            terms = gr_terms(pred, y, lam, beta, self.transform, self.normalize, self.eps, mix=mix,
                             world=group_size() > 1)
        except RuntimeError as e:
            if NON_FINITE not in str(e):
                raise
            raise FloatingPointError(f"training diverged at epoch {fit_epoch(self.learn) + 1}, batch {self.iter + 1}: "
                                     f"{NON_FINITE}; lower --lr (the learning rate)") from None
        # its gradient w.r.t. pred is exactly G; MixedPrecision/GradientAccumulation rescale it later
        self.learn.loss_grad = (terms.gradient.detach() * pred).sum()
        self.terms = terms

    def after_train(self):
        self.terms = None  # not held between epochs, nor pickled with an exported learner

    after_fit = after_train
