"""The (lam, beta) settings the paper reports, looked up by noise rate and class count.

The table, its sources and what the paper does not say are in docs/design.md ("Settings the paper reports").

They were chosen on long runs over all of CIFAR (the paper's text gives batch 128 and a learning-rate cut every 5k
iterations, not the total; the authors' released CIFAR-100 code trains 30k iterations). On a short budget a large
emphasis spread can leave a few examples carrying every batch and starve training; `BUDGET_WARNING` says so
wherever a preset is used, and the fixed default (lam 0.5, beta 8) is the safer choice. Where no setting is given,
`default_setting` picks by budget: the fixed default below `LONG_BUDGET_EPOCHS` epochs, `LONG_DEFAULT` from there on.
"""

from __future__ import annotations

import math
from typing import NamedTuple

__all__ = ["Setting", "PAPER_SETTINGS", "FIXED_DEFAULT", "paper_setting", "BUDGET_WARNING", "REFERENCE_EPS",
           "DEFAULT_WARMUP", "PRESET_WARMUP", "WARMUP_MODES", "TUNE_GRID", "UNCOVERED_NOISE_WARNING",
           "LONG_BUDGET_EPOCHS", "LONG_DEFAULT", "default_setting", "default_note", "preset_note", "AUTO",
           "AUTO_COMPETENT"]

# the authors' reference layer's epsilon in (p - y) / (2 - 2p + eps): fitted examples stop pushing their logits
REFERENCE_EPS = 1e-6
# GR's warm-up (--warmup) comes with the setting: the paper's table (`--preset`) has large spreads tuned on long
# schedules and gets a cross-entropy blend over the first half; the fixed default's small spread gets none.
# docs/design.md ("emphasis warm-up") and BENCHMARKS.md have the runs behind both choices.
WARMUP_MODES = ("blend", "ramp")  # a*G_GR + (1-a)*G_CE, or lam and beta moved up from (0, 2)
PRESET_WARMUP = 0.5
DEFAULT_WARMUP = 0.0  # the fixed default's, and that of a lam and beta given by hand
# what the tuner tries: GR's (lam, beta, warm-up) for the paper's fixed default and its CIFAR-10 rows for r = 0.4 and
# r >= 0.6 (r = 0.2's 0.5 / 12 sits beside the default), each with its own warm-up; plain cross-entropy, so that a
# run never trains with GR where its own held-out labels say GR loses; and the two baselines that beat GR's
# defaults on a row of BENCHMARKS.md ("Results across methods": GCE on digits, SCE at 40 epochs); label smoothing,
# never the best there, may join a grid by name. One training run each, so the grid is small.
TUNE_GRID = ((0.5, 8.0, DEFAULT_WARMUP), (1.0, 16.0, PRESET_WARMUP), (2.0, 12.0, PRESET_WARMUP), "ce", "gce", "sce")


class Setting(NamedTuple):
    lam: float  # emphasis focus parameter
    beta: float  # emphasis spread parameter
    source: str  # where it comes from
    warmup: float = DEFAULT_WARMUP  # fraction of training over which GR takes over from cross-entropy


# (classes, noise rate) -> setting, as in the paper, with fastgr's warm-up (the paper has none: a short schedule
# needs it, docs/design.md "Emphasis warm-up")
PAPER_SETTINGS: dict[tuple[int, float], Setting] = {
    (10, 0.0): Setting(0.0, 2.0, "CIFAR-10, r=0 (Table 2)", PRESET_WARMUP),
    (10, 0.2): Setting(0.5, 12.0, "CIFAR-10, r=0.2 (Table 3)", PRESET_WARMUP),
    (10, 0.4): Setting(1.0, 16.0, "CIFAR-10, r=0.4 (Table 3)", PRESET_WARMUP),
    (10, 0.6): Setting(2.0, 12.0, "CIFAR-10, r=0.6 (Table 3)", PRESET_WARMUP),
    (10, 0.8): Setting(2.0, 12.0, "CIFAR-10, r=0.8 (Table 3)", PRESET_WARMUP),
    (100, 0.0): Setting(0.0, 2.0, "CIFAR-100, r=0 (Table 2)", PRESET_WARMUP),
    (100, 0.2): Setting(0.3, 6.0, "CIFAR-100, r=0.2 (Table 10)", PRESET_WARMUP),
    (100, 0.4): Setting(0.4, 6.0, "CIFAR-100, r=0.4 (Table 10)", PRESET_WARMUP),
    (100, 0.6): Setting(0.5, 8.0, "CIFAR-100, r=0.6 (Table 10)", PRESET_WARMUP),
}
FIXED_DEFAULT = Setting(0.5, 8.0, "the paper's fixed default (Tables 4, 5, 8)", DEFAULT_WARMUP)
# fastgr's default where no setting is given depends on the budget: on short budgets cross-entropy has not
# memorised yet and a large spread only slows learning; on long ones the large spread keeps the wrong labels
# unfitted. Epochs, not steps: memorising a wrong label takes passes over it. The runs behind the threshold:
# docs/design.md ("The default setting depends on the budget") and BENCHMARKS.md ("Results across methods").
LONG_BUDGET_EPOCHS = 40
LONG_DEFAULT = Setting(1.0, 16.0, f"fastgr's default from {LONG_BUDGET_EPOCHS} epochs: the paper's CIFAR-10 r=0.4 "
                       "row (Table 3) with fastgr's warm-up", PRESET_WARMUP)
# the automatic setting (`fastgr.handover`) trains with one of two settings, each blended in by its own rule: the
# paper's CIFAR-10 r=0.4 row (Table 3) on a long training or once the run starts to memorise, and the fixed default
# on a network competent from its first epoch (a pretrained body fine-tuned)
AUTO = Setting(1.0, 16.0, "automatic: the paper's CIFAR-10 r=0.4 row (Table 3) on a long training or once the "
               "network starts to fit the labels it contradicted; the fixed default on a network competent from its "
               "first epoch", 0.0)
AUTO_COMPETENT = Setting(0.5, 8.0, "automatic, a network competent from its first epoch: the paper's fixed default",
                         0.0)
CLOTHING1M = Setting(1.0, 16.0, "Clothing1M, ~38% real noise (Sec. 4.3)", PRESET_WARMUP)

# the paper's tables cover symmetric label noise only: what --preset says for any other
UNCOVERED_NOISE_WARNING = (
    "the paper's table was measured with symmetric noise only; for {kind} noise these settings are untested "
    "(try --tune, which scores GR's settings and cross-entropy on held-out noisy labels)"
)
BUDGET_WARNING = (
    "the paper's settings were chosen on long runs over all of CIFAR; on a short budget a large beta can starve "
    "training (watch gr_ess, the effective sample size); the fixed default lam 0.5, beta 8 is safer"
)


def default_setting(
    epochs: int,  # every epoch of the training (a fine-tune's head epochs included)
) -> Setting:
    "GR's setting where none is given: the fixed default below `LONG_BUDGET_EPOCHS` epochs, `LONG_DEFAULT` from there."
    return LONG_DEFAULT if epochs >= LONG_BUDGET_EPOCHS else FIXED_DEFAULT


def paper_setting(
    noise_rate: float | None,  # the (estimated) fraction of wrong labels; None if unknown
    n_classes: int,  # number of classes of the task
) -> Setting:
    """The paper's setting for the nearest table row: CIFAR-10's below ~32 classes, CIFAR-100's above. Halfway
    between two rows (0.3 on CIFAR-10) the noisier row's: too weak a setting for the noise costs more than too
    strong a one (BENCHMARKS.md, "Results across methods": CIFAR-5k 30% pairflip, CIFAR-10N aggre_label)."""
    if noise_rate is None:
        return FIXED_DEFAULT
    if not 0 <= noise_rate < 1:
        raise ValueError(f"noise rate must be in [0, 1), got {noise_rate}")
    # the class counts of the table are 10 and 100: nearest on a log scale
    family = 10 if n_classes < math.sqrt(10 * 100) else 100
    rows = sorted((r, s) for (c, r), s in PAPER_SETTINGS.items() if c == family)
    # distances rounded so that 0.3 is halfway in floating point too (0.3 - 0.2 < 0.4 - 0.3 unrounded)
    return min(rows, key=lambda rs: (round(abs(rs[0] - noise_rate), 9), -rs[0]))[1]


def default_note(setting: Setting) -> str | None:
    "What a run on GR's long-budget default tells the user (None on any other setting): which, why, how to opt out."
    if setting.source != LONG_DEFAULT.source:
        return None
    return (f"{LONG_BUDGET_EPOCHS} epochs or more: GR's default is lam={setting.lam:g}, beta={setting.beta:g}, warm-up "
            f"{setting.warmup:g} (on shorter budgets lam 0.5, beta 8; BENCHMARKS.md); --lam 0.5 --beta 8 for those")


def preset_note(setting: Setting) -> str:
    "What `--preset` tells the user: the setting, where it comes from, and that it was tuned for long schedules."
    return (f"preset lam={setting.lam:g}, beta={setting.beta:g}, warm-up {setting.warmup:g} from {setting.source}: "
            f"{BUDGET_WARNING}")
