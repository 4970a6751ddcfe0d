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

from .config import TrainConfig, resolve_settings
from .data import stratified_split
from .noise import NoisyLabels
from .preparation import Prepared, check_grid, grid_setting, prepare
from .presets import Setting
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


def tune(
    folder: RunFolder,  # where tune.csv, tune.json and one sub-folder per setting go
    run: Prepared,  # the run to tune for (`prepare`): its config, data, labels (the held-out part keeps its given
    # labels) and checked grid
    reporter: Reporter,  # told of progress
    resume: bool = False,  # a resumed `train --tune`: finished settings are read, the cut one goes on
) -> dict[str, Any]:  # {"loss", "lam", "beta", "warmup", "holdout", "n_holdout", "table": rows as dicts}
    "Train every setting of the run's grid on the rest of the training set; the best held-out noisy accuracy wins."
    if resume and folder.has("tune.json"):
        return folder.read("tune.json")
    cfg, data, noisy = run.cfg, run.data, run.labels
    held = stratified_split(noisy.given, cfg.tune_holdout, cfg.seed)
    keep = ~held
    # the held-out part keeps its *given* labels: tuning never sees clean labels
    sub = data.holdout(held, noisy.given, f"{data.name} (tuning split)")
    sub_noisy = NoisyLabels(noisy.given[keep], noisy.true[keep], noisy.noise_type, noisy.rate, noisy.seed,
                            truth_known=noisy.truth_known)
    rows = []
    for i, g in enumerate(run.grid):
        loss, (lam, beta, warmup) = (g, (None, None, None)) if isinstance(g, str) else ("gr", g)
        c = cfg.replace(lam=lam, beta=beta, loss=loss, mixup=0.0, preset=False, correct=False, tune=False)
        setting = Setting(lam, beta, "tuning grid", warmup) if loss == "gr" else None
        resolved = resolve_settings(c, run.device, data, setting)
        name = loss if loss != "gr" else f"lam {lam:g}, beta {beta:g}, warm-up {warmup:g}"
        phase = folder.sub(f"tune/{i:02d}")
        r = train_phase(phase, c, resolved, sub, sub_noisy, reporter, f"tune {i + 1}/{len(run.grid)}: {name}",
                        light=True, resume=resume)
        rows.append({"loss": loss, "lam": lam, "beta": beta, "warmup": warmup,
                     "holdout_acc_noisy": r.test_accuracy_final, "holdout_acc_noisy_best": r.test_accuracy_best,
                     "holdout_acc_true": _holdout_acc_true(r.holdout_pred, phase, noisy.truth, held),
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
    truth,  # (N,) the training set's true labels, or None where they are not known
    held,  # (N,) bool: the held-out part
) -> float | None:
    """A candidate's accuracy on the held-out part's *true* labels: reported beside the noisy accuracy to show how
    well the tuner ranked, never used to choose. None where the truth is unknown, or a candidate finished by an
    older fastgr has no held-out predictions."""
    import numpy as np

    if truth is None:
        return None
    if pred is None:
        if not phase.has(HOLDOUT_FILE):
            return None
        import pandas as pd

        pred = pd.read_csv(phase.path / HOLDOUT_FILE)["pred"].to_numpy()
    return float((np.asarray(pred) == np.asarray(truth)[held]).mean())


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
    folder = RunFolder(out) if out is not None else None
    if folder is not None:
        folder.check(overwrite, resume=False)
    # GR's setting is what is tuned: the config's own lam, beta and loss do not count
    run = prepare(cfg.replace(loss="gr", lam=None, beta=None, mixup=0.0, preset=False, tune=True), grid)
    if folder is None:
        with tempfile.TemporaryDirectory() as tmp:
            return tune(RunFolder(tmp), run, reporter)
    with folder.open(overwrite):
        return tune(folder, run, reporter)

