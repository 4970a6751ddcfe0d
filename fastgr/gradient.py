"""The gradient of gradient rescaling (GR), as pure tensor functions.

GR replaces the gradient that a classification loss sends into the logits with
`G_i = w_i * u_i / norm`: `u_i` is the unit-L1 direction of the cross-entropy
gradient and `w_i = g(beta * p_i**lam * (1 - p_i))` a weight of the probability
`p_i` that the model gives example i's label (Wang et al., arXiv:1905.11233).

Everything here is computed without cancellation, so it stays finite for any
finite logits and any `beta`: `1 - p_i` comes from log-sum-exps, the direction
from a softmax with the target logit masked out, and the "sum"-normalised
exponential weights from a softmax over the batch. No function here moves data
between devices or synchronises with the host on an accelerator.

`eps` is the authors' reference layer's `(p - y) / (2 - 2p + eps)`: the unit direction is scaled by
`r_i = 2(1 - p_i) / (2(1 - p_i) + eps)`, which is 1 until an example is fitted to `1 - p_i ~ eps` and then
falls to 0. With `eps = 0` (the bare formula) a batch whose examples are all fitted still gets a unit push and
the logits grow without bound: docs/design.md ("the reference layer's saturation") and BENCHMARKS.md ("The
reference layer's eps") have the measurement.
"""

from __future__ import annotations

import math
import numbers
from typing import NamedTuple

import torch
from torch import Tensor

from .presets import REFERENCE_EPS

__all__ = [
    "REFERENCE_EPS",
    "TRANSFORMS",
    "NORMALIZATIONS",
    "GRTerms",
    "check_settings",
    "gr_terms",
    "gr_gradient",
    "ce_gradient",
    "emphasis_weights",
]

TRANSFORMS = ("exp", "identity")
NORMALIZATIONS = ("sum", "mean")

# exp(beta) must stay finite in float32 when weights are not normalised over the batch
_MAX_MEAN_EXP_BETA = 80.0


def check_settings(
    lam: float,  # emphasis focus parameter: examples near p = lam / (1 + lam) get the largest weight; >= 0
    beta: float,  # emphasis spread parameter: 0 weights every example alike, larger concentrates; >= 0
    transform: str = "exp",  # `g` applied to `beta * p**lam * (1 - p)`: "exp" (GR) or "identity"
    normalize: str = "sum",  # "sum": weights normalised over the batch; "mean": divided by the batch size
    eps: float = REFERENCE_EPS,  # saturation of the reference layer: fitted examples stop pushing; >= 0
) -> tuple[float, float, float]:  # lam, beta, eps as Python floats
    """Raise a `ValueError` that names the problem if the GR settings are not valid. Any real number is
    accepted (a numpy scalar, a 0-d tensor: read once here, never in a training step)."""
    out = []
    for name, v in (("lam", lam), ("beta", beta), ("eps", eps)):
        real = isinstance(v, numbers.Real) or (isinstance(v, Tensor) and v.ndim == 0 and not v.is_complex())
        if isinstance(v, bool) or not real or (isinstance(v, Tensor) and v.dtype == torch.bool):
            raise ValueError(f"{name} must be a number, got {v!r}")
        v = float(v)
        if not math.isfinite(v) or v < 0:
            raise ValueError(f"{name} must be a finite number >= 0, got {v}")
        out.append(v)
    lam, beta, eps = out
    if transform not in TRANSFORMS:
        raise ValueError(f"unknown transform {transform!r}; choose one of {', '.join(TRANSFORMS)}")
    if normalize not in NORMALIZATIONS:
        raise ValueError(f"unknown normalize {normalize!r}; choose one of {', '.join(NORMALIZATIONS)}")
    if transform == "exp" and normalize == "mean" and beta > _MAX_MEAN_EXP_BETA:
        raise ValueError(
            f"beta={beta} with transform='exp' and normalize='mean' overflows exp(beta) in float32; "
            f"use normalize='sum' (overflow-free for any beta) or beta <= {_MAX_MEAN_EXP_BETA:g}"
        )
    return lam, beta, eps


NON_FINITE = "non-finite logits (NaN or inf): GR's batch-normalised weights would turn every gradient NaN"


def _check_inputs(logits: Tensor, targets: Tensor) -> None:
    if not isinstance(logits, Tensor) or not isinstance(targets, Tensor):
        raise TypeError("logits and targets must be tensors")
    if not logits.is_floating_point():
        raise TypeError(f"logits must be a floating-point tensor, got {logits.dtype}")
    if logits.ndim < 2:
        raise ValueError(f"logits must have shape (B, C) or (B, C, *), got {tuple(logits.shape)}")
    if logits.shape[1] < 2:
        raise ValueError(
            f"the class axis (dim 1) of the logits has size {logits.shape[1]}; GR needs at least 2 classes"
        )
    if targets.is_floating_point() or targets.is_complex() or targets.dtype == torch.bool:
        raise TypeError(
            f"targets must be integer class labels, got {targets.dtype}: GR is not defined for soft or "
            "multi-label targets (MixUp, CutMix, label smoothing, BCE)"
        )
    expected = logits.shape[:1] + logits.shape[2:]
    if targets.shape != expected:
        raise ValueError(
            f"targets of shape {tuple(targets.shape)} do not match logits of shape {tuple(logits.shape)}; "
            f"expected {tuple(expected)} (one integer label per example, class axis 1)"
        )
    # one NaN or inf logit would turn every example's gradient NaN (the "sum" normalisation couples them): an
    # error at this step instead, checked on the device (on a GPU it surfaces at the next synchronisation)
    torch._assert_async(torch.isfinite(logits).all(), NON_FINITE)
    if targets.device != logits.device:  # metadata only: no synchronisation
        raise ValueError(f"targets are on {targets.device} and logits on {logits.device}; put them on one device")
    n_classes = logits.shape[1]
    if targets.numel() == 0:
        return
    if targets.device.type == "cpu":
        lo, hi = int(targets.min()), int(targets.max())
        if lo < 0 or hi >= n_classes:
            bad = lo if lo < 0 else hi
            raise ValueError(f"label {bad} is outside [0, {n_classes}) for logits with {n_classes} classes")
    elif targets.device.type == "cuda":
        # checked on the device, so the training step never waits for the host
        torch._assert_async(
            ((targets >= 0) & (targets < n_classes)).all(),
            f"fastgr: labels outside [0, {n_classes})",
        )


class GRTerms(NamedTuple):
    "What one GR step computes; `weight` and `p` are flat over the N examples (B times any extra dims)."

    gradient: Tensor  # (B, C, *) like the logits, in their dtype: G, the gradient to send into them
    weight: Tensor  # (N,) float32 or float64: normalised weight of each example, G_i = weight_i * r_i * u_i
    p: Tensor  # (N,) float32 or float64: probability of each example's label, p_i


def gr_terms(
    logits: Tensor,  # (B, C) or (B, C, *), class axis 1; each position of the extra dims is one example
    targets: Tensor,  # (B,) or (B, *): integer labels in [0, C)
    lam: float = 0.5,  # emphasis focus parameter: the largest weight goes to p = lam / (1 + lam); >= 0
    beta: float = 8.0,  # emphasis spread parameter: 0 weights every example alike; >= 0
    transform: str = "exp",  # "exp" (GR) or "identity": `g` in w = g(beta * p**lam * (1 - p))
    normalize: str = "sum",  # "sum": divide by the batch's total weight; "mean": divide by the batch size
    eps: float = REFERENCE_EPS,  # the reference layer's saturation: direction times 2(1-p) / (2(1-p) + eps)
    mix: float = 1.0,  # share a of GR in a * G_GR + (1 - a) * G_CE; below 1 blends in mean cross-entropy
    world: bool = False,  # "sum" over the global batch of all torch.distributed ranks (for DDP)
) -> GRTerms:
    """GR's gradient w.r.t. `logits`, with the per-example weights and label probabilities it came from.

    `mix < 1` returns the blend `mix * G + (1 - mix) * G_CE` with the mean cross-entropy gradient
    `G_CE_i = 2 (1 - p_i) u_i / N` (the emphasis warm-up of `GRCallback`); `weight` stays GR's.

    `world=True` (with "sum") normalises the weights over the batches of all ranks — one all-reduce of the
    maximum and one of the sum, no host synchronisation — and multiplies this rank's gradient by the world size,
    so that DDP's averaging of the ranks' parameter gradients gives the gradient of the concatenated batch.
    ("mean" needs neither: DDP's average of per-rank means is the global mean, for equal batch sizes.)"""
    lam, beta, eps = check_settings(lam, beta, transform, normalize, eps)
    if not 0 <= mix <= 1:
        raise ValueError(f"mix must be in [0, 1], got {mix}")
    _check_inputs(logits, targets)
    n_classes = logits.shape[1]
    # float32 at least, so half-precision logits get exact-enough weights; float64 stays float64
    cdtype = torch.promote_types(logits.dtype, torch.float32)
    with torch.autocast(logits.device.type, enabled=False):
        z = logits.detach().movedim(1, -1).reshape(-1, n_classes).to(cdtype)  # (N, C)
        t = targets.reshape(-1, 1).long()  # (N, 1)
        is_label = torch.zeros_like(z, dtype=torch.bool).scatter_(1, t, True)
        z_other = z.masked_fill(is_label, float("-inf"))
        lse = torch.logsumexp(z, dim=1)  # (N,)
        log_p = z.gather(1, t).squeeze(1) - lse  # log p_i, finite for finite logits
        log_1mp = torch.logsumexp(z_other, dim=1) - lse  # log(1 - p_i), no cancellation
        # p_i**lam * (1 - p_i) in [0, 1]; lam = 0 gives p**0 = 1 since log_p is finite
        base = torch.exp(lam * log_p + log_1mp)
        n = base.shape[0]
        ranks = _world_size() if world and normalize == "sum" else 1
        if transform == "exp":
            s = beta * base
            if normalize == "mean":
                weight = torch.exp(s) / n
            elif ranks > 1:
                weight = _global_softmax(s)
            else:
                weight = torch.softmax(s, dim=0)
        elif normalize == "sum":
            # beta cancels; leaving it out keeps tiny betas from underflowing
            total = _global_sum(base.sum()) if ranks > 1 else base.sum()
            weight = base / total.clamp_min(torch.finfo(cdtype).tiny) if beta > 0 else torch.zeros_like(base)
        else:
            weight = beta * base / n
        # u_i = (p_i - onehot) / ||.||_1 = q_i / 2 off the label and -1/2 on it
        u = torch.softmax(z_other, dim=1).mul_(0.5).masked_fill_(is_label, -0.5)
        scale = weight * ranks if ranks > 1 else weight
        if eps > 0:
            # r_i = 2(1-p) / (2(1-p) + eps) from the exact 1 - p_i; 0 where 1 - p_i underflows
            one_minus_p = torch.exp(log_1mp)
            scale = scale * (one_minus_p / (one_minus_p + eps / 2))
        if mix < 1:
            # cross-entropy's own gradient has the same direction, with magnitude 2 (1 - p_i) / N
            scale = mix * scale + (1 - mix) * 2 * torch.exp(log_1mp) / n
        g = (u * scale[:, None]).to(logits.dtype)
        shape = logits.shape[:1] + logits.shape[2:] + (n_classes,)
        gradient = g.reshape(shape).movedim(-1, 1)
    return GRTerms(gradient, weight, torch.exp(log_p))


def _world_size() -> int:
    import torch.distributed as dist

    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def _global_sum(x: Tensor) -> Tensor:
    import torch.distributed as dist

    x = x.clone()
    dist.all_reduce(x, op=dist.ReduceOp.SUM)
    return x


def _global_softmax(s: Tensor) -> Tensor:
    "softmax over the concatenation of every rank's `s` (N_r,), this rank's part: a global max, then a global sum."
    import torch.distributed as dist

    m = s.max() if s.numel() else s.new_tensor(float("-inf"))
    dist.all_reduce(m, op=dist.ReduceOp.MAX)
    e = torch.exp(s - m)
    return e / _global_sum(e.sum())


def gr_gradient(
    logits: Tensor,  # (B, C) or (B, C, *), class axis 1; each position of the extra dims is one example
    targets: Tensor,  # (B,) or (B, *): integer labels in [0, C)
    lam: float = 0.5,  # emphasis focus parameter: the largest weight goes to p = lam / (1 + lam); >= 0
    beta: float = 8.0,  # emphasis spread parameter: 0 weights every example alike; >= 0
    transform: str = "exp",  # "exp" (GR) or "identity": `g` in w = g(beta * p**lam * (1 - p))
    normalize: str = "sum",  # "sum": divide by the batch's total weight; "mean": divide by the batch size
    eps: float = REFERENCE_EPS,  # the reference layer's saturation; 0 for the bare formula
) -> Tensor:  # (B, C, *) like `logits`, in their dtype
    """GR's gradient `G` w.r.t. the logits: `G_i = w_i * r_i * u_i / norm` (docs/design.md, "The gradient").

    With `transform="identity", normalize="mean", eps=0` it equals the mean-reduced gradient of cross-entropy
    (beta=2, lam=0), of MAE `2 * (1 - p_y)` (beta=4, lam=1) and of GCE `(1 - p_y**q) / q` (beta=2, lam=q);
    the default `eps` moves each entry by at most `beta * eps / 4` divided by the batch size.
    """
    return gr_terms(logits, targets, lam, beta, transform, normalize, eps).gradient


def ce_gradient(
    logits: Tensor,  # (B, C) or (B, C, *), class axis 1
    targets: Tensor,  # (B,) or (B, *): integer labels in [0, C)
) -> Tensor:  # (B, C, *) like `logits`: the gradient of mean cross-entropy w.r.t. them
    "The mean cross-entropy gradient `(softmax - onehot) / N`, computed like GR's (no cancellation at p = 1)."
    return gr_terms(logits, targets, 0.0, 0.0, eps=0.0, mix=0.0).gradient


def emphasis_weights(
    logits: Tensor,  # (B, C) or (B, C, *), class axis 1
    targets: Tensor,  # (B,) or (B, *): integer labels in [0, C)
    lam: float = 0.5,  # emphasis focus parameter; >= 0
    beta: float = 8.0,  # emphasis spread parameter; >= 0
    transform: str = "exp",  # "exp" (GR) or "identity"
    normalize: str = "sum",  # "sum" (weights add up to 1 over the batch) or "mean" (divided by the batch size)
) -> Tensor:  # (B,) or (B, *) like `targets`, float32 (float64 for float64 logits)
    "The normalised weight GR gives each example: `gr_gradient(..., eps=0)[i] == weight[i] * u_i`."
    return gr_terms(logits, targets, lam, beta, transform, normalize).weight.reshape(targets.shape)
