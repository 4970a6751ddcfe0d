"""Label issues: every training example ranked by how likely its given label is wrong, from one training run.

A run records each example's training dynamics (`fastgr.dynamics.TrainingDynamics`) and, at its end, the trained
model's probabilities on the unaugmented training set. `rank_label_issues` turns them into the table of
`label_issues.csv` (docs/design.md, "Label issues"):

- `score` (higher: more likely wrong) is `1 / (1 + exp(aum))`, the area under the margin (AUM) mapped to (0, 1):
  0.5 where the given label's logit and the best other one were even on average over training. AUM ranked the
  wrong labels of digits (40% symmetric) best of the signals a run has (BENCHMARKS.md, "Label issues");
- `flagged`: the examples whose given label lost to another class on average over training (AUM < 0) and whose
  margin lies in the low component of a two-component Gaussian mixture on the margins (`flag_cut`: a network that
  could not fit some right labels gives them a negative margin too, between the two components). Their share
  is the estimate of the noise rate, which needs no clean labels (`estimated_noise_rate`). It holds where training
  does not memorise the wrong labels (GR's purpose); a run that memorises them (cross-entropy, long) gives
  wrong labels a positive margin too, and the estimate falls short;
- `suggested_label`: the trained model's prediction where it differs from the given label, else its most probable
  other class; `model_label` is the prediction itself, what `train --correct` relabels to (it relabels where the
  final model disagrees, not the flagged set; BENCHMARKS.md, "Label issues", has the two rules
  retrained side by side).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd
import torch

__all__ = ["rank_label_issues", "estimated_noise_rate", "flag_cut", "label_issues", "issue_auroc", "issue_summary",
           "suspect_images", "item_files", "clip_label", "above_chance", "learning_verdict", "not_learned"]

ISSUES_FILE = "label_issues.csv"


def clip_label(
    text: str,  # a class name or item, as long as a user made it
    width: int = 40,  # characters kept
) -> str:
    "A label cut to `width` characters for a table or a picture's title (the CSV keeps it whole)."
    text = str(text)
    return text if len(text) <= width else text[: width - 1] + "…"


MIXTURE_MIN_EXAMPLES = 50  # fewer margins than this: no mixture is fitted, the cut stays at 0


def flag_cut(
    aum: np.ndarray | torch.Tensor,  # (N,) area under the margin of every training example (NaN: never trained on)
) -> float:  # the AUM below which a label is flagged: 0, or lower
    """Where the flagged set ends: at an AUM of 0 (the given label lost to another class on average over
    training), or lower, where a two-component Gaussian mixture fitted to the margins says the low component (the
    wrong labels) stops being the likelier one, if that comes before 0. A network that could not fit part of its
    rightly labelled examples (a weak or short run, hard data) gives them a negative margin too; they sit between
    the wrong labels' component and the right ones', and the mixture leaves them out. Where the mixture's boundary
    lies above 0 (clean labels, a unimodal spread, a run that memorised) the cut stays at 0: the mixture never
    flags more than AUM < 0 would. BENCHMARKS.md ("Label issues") has the estimates it gives."""
    from sklearn.mixture import GaussianMixture

    aum = np.asarray(aum, dtype=np.float64)
    a = aum[~np.isnan(aum)]
    if len(a) < MIXTURE_MIN_EXAMPLES or a.min() >= 0 or np.ptp(a) == 0:
        return 0.0
    gm = GaussianMixture(2, random_state=0, n_init=3).fit(a[:, None])  # seeded: the same margins, the same cut
    lo = int(np.argmin(gm.means_[:, 0]))
    between = np.unique(a[(a >= gm.means_[lo, 0]) & (a <= 0.0)])  # where the boundary can be, below 0
    if len(between) == 0:
        return 0.0
    post = gm.predict_proba(between[:, None])[:, lo]
    past = np.flatnonzero(post < 0.5)
    return float(between[past[0]]) if len(past) else 0.0


def estimated_noise_rate(
    aum: np.ndarray | torch.Tensor,  # (N,) area under the margin of every training example (NaN: never trained on)
) -> float:
    "The share of training examples flagged: AUM below `flag_cut` (0, or lower where the mixture says so)."
    aum = np.asarray(aum, dtype=np.float64)
    seen = ~np.isnan(aum)
    return float((aum[seen] < flag_cut(aum)).mean()) if seen.any() else 0.0


def rank_label_issues(
    given: np.ndarray,  # (N,) the labels the run trained on
    probs: np.ndarray | torch.Tensor,  # (N, C) the trained model's probabilities on the training set
    aum: np.ndarray | torch.Tensor,  # (N,) area under the margin (NaN: never trained on)
    mean_p: np.ndarray | torch.Tensor,  # (N,) late mean probability of the given label (NaN: never trained on)
    items: Sequence[str],  # (N,) what each example is: a path, or e.g. "digits:17"
    classes: Sequence[str],  # class names in label order
    true: np.ndarray | None = None,  # (N,) the true labels, where known: adds `true_label` and `is_wrong`
) -> pd.DataFrame:  # one row per training example, most suspect first
    "The label-issue table of a run: `item`, `given_label`, `suggested_label`, `score`, `flagged`, and the evidence."
    given = np.asarray(given, dtype=np.int64)
    probs = np.asarray(probs, dtype=np.float64)
    aum, mean_p = np.asarray(aum, dtype=np.float64), np.asarray(mean_p, dtype=np.float64)
    n = len(given)
    if not probs.shape == (n, len(classes)) or len(aum) != n or len(mean_p) != n or len(items) != n:
        raise ValueError(f"rank_label_issues needs one row per example: {n} labels, probs {probs.shape}, "
                         f"{len(aum)} AUMs, {len(mean_p)} mean p, {len(items)} items, {len(classes)} classes")
    p_given = probs[np.arange(n), given]
    pred = probs.argmax(1)
    other = probs.copy()
    other[np.arange(n), given] = -1.0
    suggested = np.where(pred != given, pred, other.argmax(1))
    # an example never trained on (a loader that could not name it) has no margin: it scores 0.5 and is not flagged
    margin = np.nan_to_num(aum, nan=0.0)
    names = np.asarray(list(classes), dtype=object)
    frame = pd.DataFrame({
        "item": list(items), "given_label": names[given], "suggested_label": names[suggested],
        "score": 0.5 * (1.0 - np.tanh(0.5 * margin)), "flagged": margin < flag_cut(aum),
        "model_label": names[pred],  # what `train --correct` relabels to, where it differs from the given label
        "p_given_final": p_given,
        "p_suggested": probs[np.arange(n), suggested],
        "mean_p_late": mean_p, "aum": aum, "index": np.arange(n),
    })
    if true is not None:
        true = np.asarray(true, dtype=np.int64)
        frame["true_label"] = names[true]
        frame["is_wrong"] = true != given
    # most suspect first; ties (e.g. saturated scores) by the margin, then by index: a stable, total order
    frame = frame.sort_values(["score", "aum", "index"], ascending=[False, True, True], kind="mergesort")
    return frame.reset_index(drop=True)


def issue_auroc(
    score: np.ndarray,  # (N,) higher: more likely wrong
    is_wrong: np.ndarray,  # (N,) bool: the label is truly wrong
) -> float | None:  # None when one of the two groups is empty
    """The AUROC of a ranking for the truly wrong labels: the chance a wrong label scores above a right one (ties
    count one half), scikit-learn's `roc_auc_score`."""
    from sklearn.metrics import roc_auc_score

    score, is_wrong = np.asarray(score, dtype=np.float64), np.asarray(is_wrong, dtype=bool)
    if is_wrong.all() or not is_wrong.any():  # one of the two groups is empty: no ranking to score
        return None
    return float(roc_auc_score(is_wrong, score))


def label_issues(
    run_dir: str | Path,  # a finished `fastgr train` run folder
) -> pd.DataFrame:  # label_issues.csv, most suspect first
    "A run's label issues, as written when it finished training."
    path = Path(run_dir) / ISSUES_FILE
    if not path.is_file():
        raise FileNotFoundError(2, "no label_issues.csv: not a finished fastgr run (or one from before fastgr "
                                   "recorded them; train it again)", str(path))
    # the labels are class names, kept as written: "01", "1" and "1.0" are three classes, not one float
    return pd.read_csv(path, dtype={c: str for c in ("item", "given_label", "suggested_label", "model_label",
                                                     "true_label")}, keep_default_na=False, na_values=[""])


def above_chance(
    accuracy: float,  # an accuracy measured on n examples
    chance: float,  # what guessing the most frequent class gets
    n: int,  # how many examples
) -> bool:
    "Whether `accuracy` is above `chance` by more than two binomial standard errors of a guess over `n` examples."
    return n > 0 and accuracy > chance + 2 * np.sqrt(chance * (1 - chance) / n)


def learning_verdict(
    test: float | None,  # held-out accuracy at the end of training (None: not measured)
    fit: float | None,  # accuracy on the given training labels
    given: np.ndarray,  # (N,) the given training labels: guessing the most frequent is chance
    n_valid: int,  # held-out examples
) -> str | None:  # why the model cannot rank its labels, in a line; None where it can
    """Whether a model learned anything label issues (or a correction) could rest on: its held-out accuracy and its
    fit of the given labels, each against guessing the most frequent given label (`above_chance`). A model that
    learned nothing gives every label the same chance of being wrong, and most a margin below zero."""
    given = np.asarray(given)
    chance = float(np.unique(given, return_counts=True)[1].max() / len(given)) if len(given) else 1.0
    for what, acc, n in (("held-out accuracy", test, n_valid), ("fit of the given labels", fit, len(given))):
        if acc is not None and not above_chance(acc, chance, n):
            return (f"this run has not learned: its {what} is {acc:.3f}, no better than guessing the most frequent "
                    f"label ({chance:.3f} over {n} examples)")
    return None


def not_learned(
    run_dir: str | Path,  # a finished run folder
) -> str | None:  # why its model cannot rank its labels, in a line; None where it can
    "`learning_verdict` of a finished run, from its summary.json, labels.csv and record."
    import json

    from .runs import RunFolder

    run = RunFolder(run_dir)
    summary = json.loads((run.path / "summary.json").read_text()) if run.has("summary.json") else {}
    given = pd.read_csv(run.path / "labels.csv", dtype={"given_label": str}, keep_default_na=False)["given_label"]
    return learning_verdict(summary.get("test_accuracy_final"), summary.get("train_accuracy_given"),
                            given.to_numpy(), run.read_record().data.n_valid)


def issue_summary(
    issues: pd.DataFrame,  # a label-issue table (`label_issues`)
) -> dict:
    "The estimate of the noise rate and, where the truth is known, how well the ranking and the flagged set did."
    out = {"n": len(issues), "flagged": int(issues["flagged"].sum()),
           "estimated_noise_rate": float(issues["flagged"].mean()) if len(issues) else 0.0}
    if "is_wrong" in issues:
        wrong, flagged = issues["is_wrong"].to_numpy(bool), issues["flagged"].to_numpy(bool)
        out.update(true_noise_rate=float(wrong.mean()), auroc=issue_auroc(issues["score"], wrong),
                   precision=float(wrong[flagged].mean()) if flagged.any() else None,
                   recall=float(flagged[wrong].mean()) if wrong.any() else None)
    return out


def item_files(
    run_dir: str | Path,  # a finished run folder
    items: Sequence[str],  # `item`s of its label-issue table
) -> list[Path] | None:  # one path per item; None where the run's data are a named source (digits, CIFAR)
    """The image file of each training item of a folder or CSV run: a folder's items are relative to it, a CSV's to
    the CSV's own folder (`fastgr.listing`), absolute ones stay. The item recorded in the run names the picture,
    never its index in the data listed again (a file gone since would shift every index after it)."""
    from .data import SOURCES
    from .runs import RunFolder

    data = RunFolder(run_dir).read_record().config.data
    if str(data) in SOURCES:
        return None
    root = Path(data) if not str(data).lower().endswith(".csv") else Path(data).parent
    return [root / str(i) for i in items]


def suspect_images(
    run_dir: str | Path,  # a finished run folder
    indices: Sequence[int],  # training-set indices (the `index` column)
    items: Sequence[str] | None = None,  # their `item`s: a folder or CSV run's pictures are found by them
) -> np.ndarray:  # (K, H, W) or (K, H, W, 3) uint8, at the run's image size
    """The training images at `indices`, as the run saw them: a folder or CSV run's files read again by the items
    the run recorded (a file gone since training is a blank tile: `item_files` says which), or a named source's
    data decoded again (digits, CIFAR), since those images have no file of their own."""
    from .data import load_data
    from .images import decode_files
    from .runs import RunFolder

    saved = RunFolder(run_dir).read_record()
    size, channels, cfg = saved.data.img_size, saved.data.channels, saved.config
    idx = list(indices)
    paths = item_files(run_dir, items) if items is not None else None
    if paths is None:
        data = load_data(cfg.data, size, cfg.valid_pct, cfg.seed, cfg.classes, cfg.in_memory)
        if data.in_memory:
            x = data.train_x[idx].numpy().transpose(0, 2, 3, 1)
            return x[..., 0] if x.shape[-1] == 1 else x
        paths = [data.train_paths[i] for i in idx]
    arrays, _ = decode_files(paths, size, channels)
    blank = np.zeros((channels, size, size), dtype=np.uint8)  # a file gone since training: a blank square
    x = np.stack([blank if a is None else a for a in arrays]) if arrays else np.zeros((0, *blank.shape), np.uint8)
    x = x.transpose(0, 2, 3, 1)
    return x[..., 0] if x.shape[-1] == 1 else x
