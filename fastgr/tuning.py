"""Picking GR's (lam, beta, warm-up), or a baseline, on held-out *noisy* training labels: `tune_run`, `fastgr tune`.

Each candidate of a small grid (GR settings and, by name, baselines such as cross-entropy) trains on the rest of
the training set for the final run's epochs; the best accuracy on the held-out part's given labels wins. No clean
label is used. docs/design.md ("Tuning") says why and what
it measured.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

from .config import RunSettings, TrainConfig, resolve_device
from .data import ImageData, load_data, stratified_split
from .loader import check_balanced
from .models import check_arch, check_model
from .noise import NoisyLabels, training_labels
from .presets import DEFAULT_WARMUP, TUNE_GRID
from .runs import Reporter, RunFolder
from .training import HOLDOUT_FILE, train_phase

__all__ = ["tune_run", "tune", "grid_setting", "check_grid", "noisy_label_accuracy"]


def noisy_label_accuracy(
    confusion,  # (C, C) counts on held-out images: true class x predicted class
    transition,  # (C, C) the noise: P(given | true), or counts of true x given labels (each row is normalised)
) -> float:
    """The accuracy a model with these predictions scores, in expectation, on labels drawn with class-conditional
    noise `transition`: the statistic the tuner ranks candidates by, sum over images of T[true, predicted] / n.
    Under symmetric noise at rate r it is a (1 - r) + (1 - a) r / (C - 1) of the clean accuracy a, increasing in a
    for r < (C - 1) / C, so it ranks as clean accuracy does; under class-dependent noise, errors into the noise's
    target classes score, and it can rank otherwise (docs/design.md, "Tuning")."""
    import numpy as np

    c, t = np.asarray(confusion, dtype=np.float64), np.asarray(transition, dtype=np.float64)
    if c.ndim != 2 or c.shape[0] != c.shape[1] or c.shape != t.shape:
        raise ValueError(f"confusion {c.shape} and transition {t.shape} must be the same square shape")
    t = t / np.maximum(t.sum(1, keepdims=True), 1e-12)
    return float((c * t).sum() / c.sum())


def grid_setting(
    g: tuple[float, ...] | str,  # (lam, beta) or (lam, beta, warmup) of GR, or a baseline's name ("ce", "gce"...)
    warmup: float | None,  # a warm-up that overrides the setting's own; None keeps it
) -> tuple[float, float, float] | str:  # (lam, beta, warmup), or the baseline's name
    "One candidate of a tuning grid, a GR setting's warm-up resolved: a setting without one starts GR at once."
    if isinstance(g, str):
        from .config import LOSSES

        if g not in LOSSES or g == "gr":
            raise ValueError(f"a tuning grid names a baseline among {', '.join(LOSSES[1:])}, or gives lam,beta; "
                             f"got {g!r}")
        return g
    if len(g) not in (2, 3):
        raise ValueError(f"a tuning grid setting is (lam, beta) or (lam, beta, warmup), got {g}")
    own = float(g[2]) if len(g) == 3 else DEFAULT_WARMUP
    return float(g[0]), float(g[1]), own if warmup is None else float(warmup)


def check_grid(
    grid,  # settings (lam, beta[, warmup]) to try
    warmup: float | None,  # the warm-up that overrides the settings' own
) -> list[tuple[float, float, float]]:
    "The whole grid resolved and checked before the first setting trains: one bad setting fails at once."
    from .gradient import check_settings

    out = [grid_setting(g, warmup) for g in grid]
    if not out:
        raise ValueError("the tuning grid is empty")
    for lam, beta, w in (g for g in out if not isinstance(g, str)):
        check_settings(lam, beta)
        if not 0 <= w <= 1:
            raise ValueError(f"a tuning grid's warm-up is a fraction of training in [0, 1], got {w}")
    return out


def tune(
    folder: RunFolder,  # where tune.csv, tune.json and one sub-folder per setting go
    cfg: TrainConfig,  # the run to tune for
    data: ImageData,  # its data
    noisy: NoisyLabels,  # its labels (the held-out part keeps its given labels)
    truth_known: bool,  # whether `noisy.true` is the truth
    grid: list[tuple[float, float, float]],  # the resolved settings (`check_grid`)
    reporter: Reporter,  # told of progress
    resume: bool = False,  # a resumed `train --tune`: finished settings are read, the cut one goes on
) -> dict[str, Any]:  # {"loss", "lam", "beta", "warmup", "holdout", "n_holdout", "table": rows as dicts}
    "Train every setting of `grid` on the rest of the training set; the best held-out noisy accuracy wins."
    if resume and folder.has("tune.json"):
        return folder.read("tune.json")
    held = stratified_split(noisy.given, cfg.tune_holdout, cfg.seed)
    keep = ~held
    # the held-out part keeps its *given* labels: tuning never sees clean labels
    sub = data.holdout(held, noisy.given, f"{data.name} (tuning split)")
    sub_noisy = NoisyLabels(noisy.given[keep], noisy.true[keep], noisy.noise_type, noisy.rate, noisy.seed)
    device = resolve_device(cfg.device)
    rows = []
    for i, g in enumerate(grid):
        loss, (lam, beta, warmup) = (g, (None, None, None)) if isinstance(g, str) else ("gr", g)
        c = cfg.replace(lam=lam, beta=beta, loss=loss, mixup=0.0, preset=False, correct=False, tune=False)
        resolved = RunSettings(device=str(device), amp=bool(cfg.amp if cfg.amp is not None else device.type == "cuda")
                               and device.type == "cuda", noise=cfg.noise_rate, augment=cfg.augment or data.augment,
                               img_size=data.img_size, lam=lam, beta=beta,
                               setting_source="tuning grid" if loss == "gr" else None, warmup=warmup,
                               warmup_mode=cfg.warmup_mode if loss == "gr" else None)
        name = loss if loss != "gr" else f"lam {lam:g}, beta {beta:g}, warm-up {warmup:g}"
        phase = folder.sub(f"tune/{i:02d}")
        r = train_phase(phase, c, resolved, sub, sub_noisy, truth_known, reporter,
                        f"tune {i + 1}/{len(grid)}: {name}", light=True, resume=resume)
        rows.append({"loss": loss, "lam": lam, "beta": beta, "warmup": warmup,
                     "holdout_acc_noisy": r.test_accuracy_final, "holdout_acc_noisy_best": r.test_accuracy_best,
                     "holdout_acc_true": _holdout_acc_true(r.holdout_pred, phase, noisy.true[held], truth_known),
                     "ess_final": r.ess_final, "emphasis_collapse_epochs": r.emphasis_collapse_epochs,
                     "seconds": r.seconds})
    best = max(rows, key=lambda r: r["holdout_acc_noisy"])  # the first of equals
    result = {"loss": best["loss"], "lam": best["lam"], "beta": best["beta"], "warmup": best["warmup"],
              "holdout": cfg.tune_holdout,
              "n_holdout": int(held.sum()), "table": rows}
    import pandas as pd

    folder.write_csv("tune.csv", pd.DataFrame(rows))
    folder.write("tune.json", result)
    return result


def _holdout_acc_true(
    pred,  # (M,) the candidate's held-out classes from this session, or None (read back from its folder)
    phase: RunFolder,  # the candidate's folder, holding them as `HOLDOUT_FILE`
    true,  # (M,) the held-out part's true labels
    truth_known: bool,  # whether `true` is the truth
) -> float | None:
    """A candidate's accuracy on the held-out part's *true* labels: reported beside the noisy accuracy to show how
    well the tuner ranked, never used to choose. None where the truth is unknown, or a candidate finished by an
    older fastgr has no held-out predictions."""
    import numpy as np

    if not truth_known:
        return None
    if pred is None:
        if not phase.has(HOLDOUT_FILE):
            return None
        import pandas as pd

        pred = pd.read_csv(phase.path / HOLDOUT_FILE)["pred"].to_numpy()
    return float((np.asarray(pred) == np.asarray(true)).mean())


def tune_run(
    cfg: TrainConfig,  # the run to tune: data, labels, model and epoch budget; its lam and beta are ignored
    out: str | Path | None = None,  # a folder for tune.csv and the tuning runs; a temporary one if None
    grid: list[tuple[float, ...] | str] | None = None,  # (lam, beta[, warmup]) or baseline names; TUNE_GRID if None
    reporter: Reporter | None = None,  # receives progress
    overwrite: bool = False,  # replace an earlier tuning in `out`
) -> dict[str, Any]:  # {"loss", "lam", "beta", "warmup", "holdout", "n_holdout", "table": rows as dicts}
    """Pick GR's (lam, beta) and warm-up on held-out *noisy* training labels: each setting of `grid` trains on
    the rest of the training set for the same epochs as the final run; the best held-out accuracy wins.
    A setting without a warm-up of its own gets `cfg.warmup`, or none; a `cfg.warmup` that is set applies to all."""
    reporter = reporter or Reporter()
    settings = check_grid(grid or TUNE_GRID, cfg.warmup)  # every setting checked before the first trains
    resolve_device(cfg.device)
    check_arch(cfg.arch, cfg.pretrained and cfg.weights is None)
    folder = RunFolder(out) if out is not None else None
    if folder is not None:
        folder.check(overwrite, resume=False)
    data = load_data(cfg.data, cfg.img_size, cfg.valid_pct, cfg.seed, cfg.classes, cfg.in_memory)
    check_balanced(cfg.balanced, data)
    check_model(cfg.arch, data.n_classes, data.channels, cfg.pretrained, cfg.weights)
    noisy, truth_known = training_labels(data, cfg.noise_rate, cfg.noise_type, cfg.seed, cfg.labels)
    if folder is None:
        with tempfile.TemporaryDirectory() as tmp:
            return tune(RunFolder(tmp), cfg, data, noisy, truth_known, settings, reporter)
    with folder.open(overwrite):
        return tune(folder, cfg, data, noisy, truth_known, settings, reporter)

