"""What GR's weights look like, for the telemetry, the plots and `fastgr weights`: where the weight peaks (the
emphasis focus), how uneven a batch's weights are (the emphasis spread, the paper's raw variance, Kish's effective
sample size), and the weight as a function of the label's probability. The weights themselves come from
`fastgr.gradient` (`gr_terms`, `emphasis_weights`); nothing here changes a gradient.
"""

from __future__ import annotations

import torch
from torch import Tensor

from .gradient import check_settings

__all__ = ["emphasis_focus", "emphasis_spread", "weight_variance", "effective_sample_size", "weight_curve"]


def emphasis_focus(
    lam: float,  # emphasis focus parameter, >= 0
) -> float:  # the probability p that gets the largest weight, in [0, 1)
    "The *emphasis focus* `lam / (1 + lam)`: where `p**lam * (1 - p)` peaks."
    if lam < 0:
        raise ValueError(f"lam must be >= 0, got {lam}")
    return lam / (1 + lam)


def emphasis_spread(
    weights: Tensor,  # (N,) or any shape: the weights of one batch (normalised or not)
) -> Tensor:  # scalar: 0 when every example is weighted alike
    """fastgr's *emphasis spread*: the variance of the weights after rescaling them to mean 1, so it does not depend
    on their scale (the batch normalisation's, or beta's). The paper's Def. 2 is the raw variance of the weights,
    `weight_variance`; this is it divided by the squared mean. The telemetry's `gr_spread` is this one."""
    w = weights.reshape(-1).float() if weights.dtype != torch.float64 else weights.reshape(-1)
    return torch.var(w / w.mean(), correction=0)


def weight_variance(
    log_weights: Tensor,  # (N,) or any shape: log of the unnormalised weights, e.g. beta * p**lam * (1 - p)
) -> Tensor:  # scalar: the natural log of the variance (-inf when every weight is alike)
    """The paper's *emphasis spread* (Def. 2): the raw variance of the weights `exp(log_weights)`, as its log,
    because GR's raw weights overflow even float64 (exp(beta * ...) past beta ~700)."""
    s = log_weights.reshape(-1).double()
    top = s.max()
    w = torch.exp(s - top)
    return 2 * top + torch.log(torch.var(w, correction=0))


def effective_sample_size(
    weights: Tensor,  # (N,) or any shape: the weights of one batch (normalised or not), >= 0
) -> Tensor:  # scalar in (0, 1]: 1 when every example is weighted alike, 1/N when one carries the batch
    "Kish's effective sample size `(sum w)**2 / sum w**2` as a fraction of the batch size."
    w = weights.reshape(-1).float() if weights.dtype != torch.float64 else weights.reshape(-1)
    return w.sum().square() / w.square().sum() / w.numel()


def weight_curve(
    p: Tensor | float,  # probability of the label, in [0, 1]; any shape
    lam: float = 0.5,  # emphasis focus parameter; >= 0
    beta: float = 8.0,  # emphasis spread parameter; >= 0
    transform: str = "exp",  # "exp" (GR) or "identity"
) -> Tensor:  # like `p`: the unnormalised weight g(beta * p**lam * (1 - p))
    "The weight GR gives an example as a function of its label's probability (the paper's Fig. 1)."
    lam, beta, _ = check_settings(lam, beta, transform, "sum")
    p = torch.as_tensor(p, dtype=torch.float64)
    s = beta * p.pow(lam) * (1 - p)
    return torch.exp(s) if transform == "exp" else s
