"""`prepare`: every check a run makes before it touches a file, and what they resolve to, in one place.

`fastgr train` (`experiment.train_run`) and `fastgr tune` (`tuning.tune_run`) both start here: the device, the
architecture (and weights), the data, the class-balanced sampling, the model for the data's classes and channels,
the labels (drawn, or read from a labels file, the truth beside them), GR's setting and, for a tuned run, the
grid. Whatever is wrong raises here, naming the input, before a run folder changes.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .config import LOSSES, TrainConfig, gr_setting, resolve_device
from .data import ImageData, load_data
from .dataloaders import check_balanced
from .finetune import check_model
from .gradient import check_settings
from .models import check_arch
from .noise import NoisyLabels, training_labels
from .presets import DEFAULT_WARMUP, TUNE_GRID, Setting
from .ranks import world_size

__all__ = ["Prepared", "prepare", "check_grid", "grid_setting"]


@dataclass(frozen=True)
class Prepared:
    "A run's inputs, checked: what `prepare` found."

    cfg: TrainConfig  # the run's config
    device: Any  # the resolved `torch.device`
    data: ImageData  # the decoded (or listed and verified) data
    labels: NoisyLabels  # the labels to train on, the truth beside them (`labels.truth_known`)
    setting: Setting | None  # GR's setting (given, the paper's preset, or the default); None for a baseline
    grid: list | None  # the tuning grid, resolved and checked, where the run tunes its setting; else None


def prepare(
    cfg: TrainConfig,  # the run's config
    grid=None,  # the settings a tuned run tries (`check_grid`); `TUNE_GRID` if None
) -> Prepared:
    "Check every input of a run, cheapest first, and resolve what they give; touches no file."
    if cfg.compile and world_size() > 1:
        raise ValueError("--compile is not supported under a launch of several processes yet; leave it out")
    tunes = cfg.tune and cfg.loss == "gr" and cfg.lam is None and cfg.beta is None
    checked = check_grid(grid or TUNE_GRID, cfg.warmup) if tunes else None  # one bad setting fails at once
    device = resolve_device(cfg.device)
    check_arch(cfg.arch, cfg.pretrained and cfg.weights is None)
    data = load_data(cfg.data, cfg.img_size, cfg.valid_pct, cfg.seed, cfg.classes, cfg.in_memory)
    check_balanced(cfg.balanced, data)
    check_model(cfg.arch, data.n_classes, data.channels, cfg.pretrained, cfg.weights)
    labels = training_labels(data, cfg.noise_rate, cfg.noise_type, cfg.seed, cfg.labels)
    # the noise rate a preset goes by: the realised one where the truth is known; none for a folder's own labels
    rate = labels.realised_rate if labels.truth_known else None
    setting = gr_setting(cfg, rate if (cfg.noise_rate > 0 or cfg.labels) else (0.0 if labels.truth_known else None),
                         data.n_classes)
    return Prepared(cfg, device, data, labels, setting, checked)


def grid_setting(
    g: tuple[float, ...] | str,  # (lam, beta) or (lam, beta, warmup) of GR, or a baseline's name ("ce", "gce"...)
    warmup: float | None,  # a warm-up that overrides the setting's own; None keeps it
) -> tuple[float, float, float] | str:  # (lam, beta, warmup), or the baseline's name
    "One candidate of a tuning grid, a GR setting's warm-up resolved: a setting without one starts GR at once."
    if isinstance(g, str):
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
    out = [grid_setting(g, warmup) for g in grid]
    if not out:
        raise ValueError("the tuning grid is empty")
    for lam, beta, w in (g for g in out if not isinstance(g, str)):
        check_settings(lam, beta)
        if not 0 <= w <= 1:
            raise ValueError(f"a tuning grid's warm-up is a fraction of training in [0, 1], got {w}")
    return out
