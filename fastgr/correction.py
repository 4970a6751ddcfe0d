"""Label correction (paper, Appendix C, Table 9): relabel the training examples a trained model disagrees with.

The protocol: train with GR; predict every training example without augmentation; relabel those whose
prediction differs from their label (optionally only above a confidence threshold); retrain from scratch on the
relabelled set with the same settings. `correction_report` says what changed and, where the truth is known,
how much of it was right.
"""

from __future__ import annotations

import numpy as np
import torch

__all__ = ["relabel", "correction_report"]


def relabel(
    probs: torch.Tensor | np.ndarray,  # (N, C) predicted class probabilities of the training examples
    given: np.ndarray,  # (N,) the labels the model was trained on
    threshold: float = 0.0,  # relabel only where the predicted class has at least this probability
) -> np.ndarray:  # (N,) int64: the corrected labels
    "Replace each label with the model's prediction where the two disagree (and the model is confident)."
    probs = torch.as_tensor(probs)
    given = np.asarray(given, dtype=np.int64)
    if probs.ndim != 2 or len(probs) != len(given):
        raise ValueError(f"probs {tuple(probs.shape)} must be (N, C) for {len(given)} labels")
    if not 0 <= threshold <= 1:
        raise ValueError(f"threshold must be in [0, 1], got {threshold}")
    conf, pred = probs.float().max(1)
    pred, conf = pred.numpy(), conf.numpy()
    return np.where((pred != given) & (conf >= threshold), pred, given).astype(np.int64)


def _frac(mask: np.ndarray, where: np.ndarray) -> float | None:
    return float(mask[where].mean()) if where.any() else None


def correction_report(
    given: np.ndarray,  # (N,) the labels the model was trained on
    corrected: np.ndarray,  # (N,) the labels after correction
    true: np.ndarray | None = None,  # (N,) the true labels, if known
    pred: np.ndarray | None = None,  # (N,) the model's predictions, for the fit of clean and noisy subsets
) -> dict[str, float | int | None]:
    """What a correction changed. Precision: relabelled examples that are now right. Recall: wrong labels that
    were fixed. `None` where it cannot be known (no truth, or nothing to count)."""
    given, corrected = np.asarray(given), np.asarray(corrected)
    changed = corrected != given
    out: dict[str, float | int | None] = {
        "n": int(len(given)),
        "relabelled": int(changed.sum()),
        "relabelled_fraction": float(changed.mean()) if len(given) else 0.0,
        "truth_known": true is not None,
        "correction_precision": None,
        "correction_recall": None,
        "noise_rate_before": None,
        "noise_rate_after": None,
    }
    if true is None:
        return out
    true = np.asarray(true)
    noisy = given != true
    out.update(
        correction_precision=_frac(corrected == true, changed),
        correction_recall=_frac(corrected == true, noisy),
        noise_rate_before=float(noisy.mean()),
        noise_rate_after=float((corrected != true).mean()),
        broken=int((changed & ~noisy).sum()),  # right labels the correction made wrong
    )
    if pred is not None:
        pred = np.asarray(pred)
        out.update(
            fit_clean=_frac(pred == given, ~noisy),  # clean examples predicted as their (right) label
            fit_noisy_given=_frac(pred == given, noisy),  # wrong labels memorised
            fit_noisy_true=_frac(pred == true, noisy),  # wrong labels whose truth the model found
        )
    return out
