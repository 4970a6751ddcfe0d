"""The losses people try instead of GR, as fastai losses, so each baseline is one `--loss` away.

`ce` is fastai's `CrossEntropyLossFlat`, `ls` its `LabelSmoothingCrossEntropyFlat`; GCE and SCE are here:
- GCE, generalised cross-entropy (Zhang & Sabuncu, NeurIPS 2018): `(1 - p_y**q) / q`; its gradient is GR's with
  `transform="identity"`, `normalize="mean"`, `beta=2`, `lam=q` (docs/design.md, "The gradient");
- SCE, symmetric cross-entropy (Wang et al., ICCV 2019): `alpha * CE + beta * RCE`, the reverse cross-entropy
  `RCE = -sum_k p_k log y_k` with `log 0` taken as `A = -4`, so `RCE = 4 (1 - p_y)`.
Each has fastai's `y_int`, `reduction`, `activation` and `decodes`, so MixUp, `get_preds` and `predict` work.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn
from torch.nn import functional as F

__all__ = ["GCELoss", "SCELoss", "baseline_loss"]


class _ClassLoss(nn.Module):
    "What fastai asks of a classification loss: integer targets, a reduction, softmax and argmax."

    y_int = True  # targets are class indices (MixUp mixes the losses, not the labels)

    def __init__(self, reduction: str = "mean"):
        super().__init__()
        self.reduction = reduction

    def per_example(self, logits: Tensor, targets: Tensor) -> Tensor:
        raise NotImplementedError

    def forward(self, logits: Tensor, targets: Tensor) -> Tensor:
        # float32 at least: half-precision logits under mixed precision; float64 stays float64
        loss = self.per_example(logits.to(torch.promote_types(logits.dtype, torch.float32)), targets.view(-1).long())
        return loss.mean() if self.reduction == "mean" else loss.sum() if self.reduction == "sum" else loss

    def activation(self, x: Tensor) -> Tensor:
        return F.softmax(x, dim=-1)

    def decodes(self, x: Tensor) -> Tensor:
        return x.argmax(dim=-1)


class GCELoss(_ClassLoss):
    "Generalised cross-entropy `(1 - p_y**q) / q` (Zhang & Sabuncu, 2018): CE as q -> 0, MAE at q = 1."

    def __init__(
        self,
        q: float = 0.7,  # the paper's choice for CIFAR
        reduction: str = "mean",  # mean, sum or none (MixUp asks for none)
    ):
        super().__init__(reduction)
        if not 0 < q <= 1:
            raise ValueError(f"GCE's q must be in (0, 1], got {q}")
        self.q = q

    def per_example(self, logits: Tensor, targets: Tensor) -> Tensor:
        p_y = F.softmax(logits, dim=-1).gather(1, targets[:, None]).squeeze(1)
        return (1 - p_y.pow(self.q)) / self.q


class SCELoss(_ClassLoss):
    "Symmetric cross-entropy `alpha * CE + beta * RCE` (Wang et al., 2019), RCE = 4 (1 - p_y)."

    def __init__(
        self,
        alpha: float = 0.1,  # the weight of cross-entropy; the paper's CIFAR-10 setting
        beta: float = 1.0,  # the weight of reverse cross-entropy; the paper's CIFAR-10 setting
        reduction: str = "mean",  # mean, sum or none (MixUp asks for none)
    ):
        super().__init__(reduction)
        self.alpha, self.beta = alpha, beta

    def per_example(self, logits: Tensor, targets: Tensor) -> Tensor:
        logp_y = F.log_softmax(logits, dim=-1).gather(1, targets[:, None]).squeeze(1)
        # -sum_k p_k log y_k over the one-hot y, with log 0 taken as -4: only the other classes count
        rce = 4.0 * (1 - logp_y.exp())
        return self.alpha * -logp_y + self.beta * rce


def baseline_loss(
    name: str,  # ce, ls, gce or sce
) -> nn.Module:
    "The loss of a baseline `--loss`, with the settings its paper uses on CIFAR-10."
    from fastai.losses import CrossEntropyLossFlat, LabelSmoothingCrossEntropyFlat

    losses = {"ce": CrossEntropyLossFlat, "ls": lambda: LabelSmoothingCrossEntropyFlat(eps=0.1), "gce": GCELoss,
              "sce": SCELoss}
    if name not in losses:
        raise ValueError(f"unknown baseline loss {name!r}; choose one of {', '.join(losses)}")
    return losses[name]()

