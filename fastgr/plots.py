"""Figures of GR: the weight curve (paper, Fig. 1), weights of flipped against clean examples, learning curves.

Every function returns a matplotlib `Figure`, closed in pyplot (a notebook shows the returned figure once;
nothing is left open), and never saves it; `save_figure` writes a PNG atomically.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from .emphasis import emphasis_focus, weight_curve
from .files import atomic_path
from .report import COLUMN_NAMES

__all__ = ["plot_weight_curves", "plot_weight_vs_p", "plot_weights_flipped_clean", "plot_learning_curves",
           "plot_label_issues", "save_figure"]


def plot_weight_curves(
    settings: Sequence[tuple[float, float]],  # (lam, beta) pairs, one curve each
    transform: str = "exp",  # "exp" (GR) or "identity"
    normalized: bool = True,  # divide each curve by its mean over p in [0, 1], as the batch normalisation does
) -> Figure:
    "Weight against the label's probability p for each (lam, beta), the emphasis focus marked (Fig. 1)."
    p = np.linspace(0, 1, 401)
    fig, ax = plt.subplots(figsize=(5.5, 3.6), dpi=90)
    for lam, beta in settings:
        w = weight_curve(p, lam, beta, transform).numpy()
        if normalized:
            w = w / w.mean()
        (line,) = ax.plot(p, w, label=f"lam={lam:g}, beta={beta:g}")
        ax.axvline(emphasis_focus(lam), color=line.get_color(), ls=":", lw=1)
    ax.set_xlabel("p, probability of the labelled class")
    ax.set_ylabel("relative weight" if normalized else "weight")
    ax.set_title("GR's emphasis (dotted: emphasis focus)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    plt.close(fig)
    return fig


def plot_weight_vs_p(
    examples: pd.DataFrame,  # columns p and weight (and optionally flipped), as `GRCallback.examples`
    lam: float | None = None,  # draw the emphasis focus of this lam
) -> Figure:
    "Each training example's weight against its p: clean and flipped examples in two colours when known."
    fig, ax = plt.subplots(figsize=(5.5, 3.6), dpi=90)
    groups = [("clean", ~examples["flipped"].astype(bool)), ("flipped", examples["flipped"].astype(bool))] \
        if "flipped" in examples else [("examples", np.ones(len(examples), bool))]
    for name, m in groups:
        ax.scatter(examples["p"][m], examples["weight"][m], s=4, alpha=0.5, label=name)
    if lam is not None:
        ax.axvline(emphasis_focus(lam), color="k", ls=":", lw=1, label="emphasis focus")
    ax.set_xlabel("p, probability of the given label")
    ax.set_ylabel("weight (1 = batch average)")
    ax.set_title("GR weight of each training example, last epoch")
    ax.legend(fontsize=8, markerscale=3)
    fig.tight_layout()
    plt.close(fig)
    return fig


def plot_weights_flipped_clean(
    examples: pd.DataFrame,  # columns weight and flipped
) -> Figure:
    "Histograms of the weights of clean and of flipped (mislabelled) training examples."
    fig, ax = plt.subplots(figsize=(5.5, 3.6), dpi=90)
    w = examples["weight"].to_numpy()
    flipped = examples["flipped"].astype(bool).to_numpy()
    bins = np.linspace(0, max(float(w.max()), 1e-6), 41)
    for name, m in (("clean", ~flipped), ("flipped", flipped)):
        if m.any():
            ax.hist(w[m], bins=bins, alpha=0.6, density=True,
                    label=f"{name} (n={int(m.sum())}, mean {w[m].mean():.2f})")
    ax.set_xlabel("weight (1 = batch average)")
    ax.set_ylabel("density")
    ax.set_title("GR weights: clean vs flipped labels, last epoch")
    ax.legend(fontsize=8)
    fig.tight_layout()
    plt.close(fig)
    return fig


def plot_learning_curves(
    metrics: pd.DataFrame,  # per epoch: columns epoch, train_loss, and any of valid_loss, train_acc_*, test_acc
    title: str = "learning curves",  # the figure's title, e.g. the run folder's name
) -> Figure:
    "Losses and accuracies per epoch, train beside test, under the names the console's training table uses."
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(9, 3.6), dpi=90)
    for ax, name, cols in ((a1, "loss", ("train_loss", "valid_loss")),
                           (a2, "accuracy", ("train_acc_given", "train_acc_true", "test_acc"))):
        for col in cols:
            if col in metrics:
                ax.plot(metrics["epoch"], metrics[col], marker=".", label=COLUMN_NAMES[col])
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))  # epochs are whole: no 2.5 ticks on a short run
        ax.set_title(name)
        ax.legend(fontsize=8)
    a2.set_ylim(0, 1)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    plt.close(fig)
    return fig


def plot_label_issues(
    images: np.ndarray,  # (K, H, W) or (K, H, W, 3) uint8: the suspects, most suspect first
    titles: Sequence[str],  # (K,) one caption each, e.g. "7 -> 1  0.99"
    cols: int = 8,  # pictures a row
) -> Figure:
    "A contact sheet of the most suspect labels: each image with its given -> suggested label and score."
    k = len(images)
    rows = max(1, -(-k // cols))
    fig, axes = plt.subplots(rows, cols, figsize=(1.6 * cols, 2.0 * rows), dpi=90, squeeze=False)
    for ax in axes.ravel():
        ax.axis("off")
    for ax, img, title in zip(axes.ravel(), images, titles):
        ax.imshow(img, cmap="gray" if img.ndim == 2 else None, interpolation="nearest")
        ax.set_title(title, fontsize=7)
    fig.suptitle("label issues: given -> suggested, score", fontsize=9)
    fig.tight_layout()
    plt.close(fig)
    return fig


def save_figure(
    fig: Figure,  # the figure to write
    path: str | Path,  # where the PNG goes; replaced atomically
) -> Path:
    "Write `fig` as a PNG without leaving a half-written file behind, then close it."
    path = Path(path)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110)
    return path
