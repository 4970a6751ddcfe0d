"""GR's automatic setting: which of GR's settings, and from when, decided by the training's own signals and its
schedule. Nothing to choose.

Three cases, in this order (`Handover`; the runs behind each: docs/design.md, "The automatic setting"):

- **Competent from its first epoch** (a pretrained body fine-tuned): the network's `confidence` (`NoiseSignals`:
  the mean probability of its predicted class, 0 for a guess, 1 for certainty; no label read) is at least
  `COMPETENT_CONFIDENCE` after the first epoch. GR's fixed default (lam 0.5, beta 8) from the second epoch on,
  whatever the length: there GR helps the network learn the right labels, clean ones included.
- **Long** (`LONG_EPOCHS` epochs or more): GR's strong setting (lam 1, beta 16) blended in from the first step over
  the first half (`PRESET_WARMUP`), as fastgr's budget default does: a slow network starts to memorise before any
  signal can tell noisy labels from clean ones, so on a long schedule GR must already be there.
- **Otherwise** cross-entropy (the learner's own loss and gradient, untouched), until the run starts to memorise
  (`handover_due`, read once an epoch): `memorised`, the share of the last epoch's confident disagreements
  (examples confidently predicted as another class than their given one) that the network now fits, is low while
  it learns what generalises and rises once it memorises the labels it disagreed with. The handover is due once
  that share has at least doubled from its lowest, beyond its sampling error: the lower 95% Wilson bound of the
  epoch's share reaches twice the lowest upper bound of an earlier epoch's (a share over a handful of
  disagreements, as on clean labels, bounds little). From the next epoch the strong setting's share of the
  gradient rises linearly from 0 to 1 over `HANDOVER_BLEND` of the training. A run that never starts to memorise
  (a short budget, a weak model, clean labels) stays cross-entropy throughout, which is what wins there
  (BENCHMARKS.md, "Where GR loses: short budgets").

The first case reads one epoch, the second the schedule alone, the third the run as it goes; no signal tells clean
labels from noisy ones early enough for a long run (docs/design.md), which is why the second reads the schedule.
It is not the default yet.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import NamedTuple

from fastai.callback.core import Callback

from .presets import AUTO, AUTO_COMPETENT, PRESET_WARMUP
from .schedule import fit_epoch, total_epochs, training_progress
from .signals import NoiseSignals
from .telemetry import StatColumns

__all__ = ["Handover", "EpochSignals", "Decision", "handover_due", "wilson_bounds", "HANDOVER_BLEND",
           "HANDOVER_FACTOR", "HANDOVER_EPOCHS", "COMPETENT_CONFIDENCE", "LONG_EPOCHS"]

HANDOVER_BLEND = 0.1  # the blend from cross-entropy to GR lasts this fraction of the training's epochs
HANDOVER_FACTOR = 2.0  # memorising is under way once the memorised share has grown this many times from its lowest
HANDOVER_EPOCHS = 1  # in this many epochs in a row (more: a jump in one epoch does not count)
# after the first epoch: a fine-tune's head epoch leaves 0.59-0.78, training from scratch 0.12-0.25 (digits, CIFAR-5k)
COMPETENT_CONFIDENCE = 0.5
# a schedule this long gets GR's strong setting from the start: between the 40 epochs where it costs clean CIFAR-5k
# 7.6 points and the 120 where the noisy rows need it (21 points above CE); nothing was measured in between, 70
# is their geometric mean, rounded (docs/design.md, "The automatic setting")
LONG_EPOCHS = 70


class EpochSignals(NamedTuple):
    "One training epoch's signals the rule reads (`NoiseSignals`)."
    memorised: float | None  # of the last epoch's confident disagreements, the share now fitted
    base: int  # how many disagreements that share is of
    noise: float | None  # `noise_cl`, reported beside the decision
    confidence: float | None = None  # the mean probability of the predicted class, rescaled (0: a guess)


class Decision(NamedTuple):
    memorised: float  # the epoch's memorised share
    lowest: float  # the lowest earlier share (its upper bound) it outgrew


def wilson_bounds(
    share: float,  # an observed proportion
    n: int,  # of how many
    z: float = 1.96,  # the normal quantile: 1.96 for 95%
) -> tuple[float, float]:
    "The Wilson score interval of a proportion: (0, 1) where there is nothing to go by."
    if n <= 0:
        return 0.0, 1.0
    d = 1 + z * z / n
    centre = (share + z * z / (2 * n)) / d
    half = z * math.sqrt(share * (1 - share) / n + z * z / (4 * n * n)) / d
    return max(0.0, centre - half), min(1.0, centre + half)


def _risen(
    history: Sequence[EpochSignals],  # the training's epochs so far, in order
    t: int,  # which of them
    factor: float,  # how many times the lowest earlier share
) -> Decision | None:  # epoch t's share, beyond sampling error, over `factor` times the lowest before it; else None
    lowest = min((wilson_bounds(s.memorised, s.base)[1] for s in history[:t] if s.memorised is not None), default=None)
    s = history[t]
    if lowest is None or s.memorised is None:
        return None
    return Decision(s.memorised, lowest) if wilson_bounds(s.memorised, s.base)[0] >= factor * lowest else None


def handover_due(
    history: Sequence[EpochSignals],  # the training's epochs so far, in order
    factor: float = HANDOVER_FACTOR,  # how many times the lowest share the rule waits for
    epochs: int = HANDOVER_EPOCHS,  # in how many epochs in a row
) -> Decision | None:  # why the handover is due after the last epoch of `history`; None: not (yet)
    "The rule of the module docstring, on the epochs so far."
    if len(history) < epochs:
        return None
    risen = [_risen(history, t, factor) for t in range(len(history) - epochs, len(history))]
    return risen[-1] if all(risen) else None


class Handover(StatColumns, Callback):
    """Decides which of GR's settings `GRCallback`'s automatic setting trains with (`setting`) and GR's share of each
    step's gradient (`share`), by the three cases of the module docstring. Adds the column `gr_share` (the share at
    the epoch's end). State: the epochs' signals (`history`) and what was decided when, saved with a checkpoint, so
    a resumed run decides as the uninterrupted one; every rank of a launch reads the same all-reduced signals and
    decides alike. Needs `NoiseSignals` on the learner (`GRCallback()` adds both)."""

    columns = ("gr_share",)
    order = NoiseSignals.order + 1  # reads the epoch's signals once computed; before the Recorder (50)
    run_valid = False

    def __init__(
        self,
        blend: float = HANDOVER_BLEND,  # the blend after memorising begins lasts this fraction of the training's epochs
    ):
        if not 0 <= blend <= 1:
            raise ValueError(f"blend must be a fraction of training in [0, 1], got {blend}")
        self.blend = blend
        self.history: list[EpochSignals] = []
        self.case: str | None = None  # "competent" or "memorising" once decided; a long schedule is read, not decided
        self.decided: int | None = None  # the epoch (0-based, of the whole training) whose end decided it
        self.why: Decision | None = None  # the shares a handover on memorising went by
        self.total: int | None = None  # the training's epochs, as of the last epoch's end
        self.epoch_stats = {}

    def before_fit(self):
        self.add_columns(self.learn)

    def _in_force(self, case: str) -> bool:
        "Was `case` decided at the end of an epoch before this one (not a new training's leftover)?"
        return self.case == case and self.decided is not None and self.decided < fit_epoch(self.learn)

    def long(self) -> bool:
        "Is the training long enough for GR's strong setting from the start (`LONG_EPOCHS`)?"
        return total_epochs(self.learn) >= LONG_EPOCHS

    def cross_entropy(self) -> bool:
        "Is this step plain cross-entropy: no case decided before this epoch, and not a long schedule?"
        return not self.long() and not (self._in_force("competent") or self._in_force("memorising"))

    def setting(self) -> tuple[float, float]:
        "GR's (lam, beta) now: the fixed default on a network competent from its first epoch, else the strong one."
        s = AUTO_COMPETENT if self._in_force("competent") else AUTO
        return s.lam, s.beta

    def share(self) -> float:
        "GR's share of the gradient now: by the case decided (module docstring); 0 while none is."
        if self._in_force("competent"):
            return 1.0
        if self.long():  # the budget default's blend, to the same float: over the first half, from the first step
            return min(1.0, training_progress(self.learn) / PRESET_WARMUP)
        if not self._in_force("memorising"):
            return 0.0
        epochs = training_progress(self.learn) * total_epochs(self.learn) - (self.decided + 1)
        length = self.blend * total_epochs(self.learn)
        return 1.0 if length <= 0 else min(1.0, max(0.0, epochs / length))

    def after_train(self):
        signals = next((cb for cb in self.learn.cbs if isinstance(cb, NoiseSignals)), None)
        if signals is None:
            raise RuntimeError("Handover needs NoiseSignals on the learner: make it with gr_learner, or pass "
                               "GRCallback() to the Learner when it is made")
        stats = signals.epoch_stats
        if "noise_cl" not in stats:  # an epoch without a training batch: nothing to read
            return
        e, self.total = fit_epoch(self.learn), total_epochs(self.learn)
        # a new training starts over; a resumed one has its epochs from the checkpoint
        self.history = self.history[:e] + [EpochSignals(stats.get("memorised"), int(stats.get("memorised_base", 0)),
                                                        stats.get("noise_cl"), stats.get("confidence"))]
        if self.decided is not None and self.decided >= e:
            self.case = self.decided = self.why = None
        if self.decided is None:
            confidence = self.history[0].confidence
            if e == 0 and confidence is not None and confidence >= COMPETENT_CONFIDENCE:
                self.case, self.decided = "competent", e
            elif not self.long() and (why := handover_due(self.history)) is not None:
                self.case, self.decided, self.why = "memorising", e, why
        self.epoch_stats = {"gr_share": self.share()}

    def after_fit(self):
        self.remove_columns(self.learn)

    def decision(self) -> str:
        "What it decided, in a line for the run's output."
        if self.case == "competent":
            return (f"automatic GR: competent from its first epoch (confidence {self.history[0].confidence:.3f}, "
                    f"from {COMPETENT_CONFIDENCE:g}): lam {AUTO_COMPETENT.lam:g}, beta {AUTO_COMPETENT.beta:g} from "
                    "epoch 2 on")
        if self.total is not None and self.total >= LONG_EPOCHS:
            return (f"automatic GR: a long training ({self.total} epochs, from {LONG_EPOCHS}): lam {AUTO.lam:g}, "
                    f"beta {AUTO.beta:g}, blended in from the first step over the first half")
        if self.case is None:
            return ("automatic GR: cross-entropy throughout (the network never began to fit the labels it "
                    f"contradicted: the memorised share never reached {HANDOVER_FACTOR:g}x its lowest)")
        noise = self.history[self.decided].noise
        return (f"automatic GR: cross-entropy until epoch {self.decided + 1}, where the network began to fit the "
                f"labels it contradicted (memorised {self.why.memorised:.3f}, over {HANDOVER_FACTOR:g}x its lowest "
                f"{self.why.lowest:.3f}; noise estimate {noise:.3f}); then GR lam {AUTO.lam:g}, beta {AUTO.beta:g}, "
                f"blended in over {self.blend * self.total:g} epochs")

    # -- state, for a run that resumes -----------------------------------------------------------
    def state_dict(self) -> dict:
        return {"history": [tuple(s) for s in self.history], "case": self.case, "decided": self.decided,
                "why": None if self.why is None else tuple(self.why), "total": self.total}

    def load_state_dict(self, state: dict) -> None:
        self.history = [EpochSignals(*s) for s in state.get("history", [])]
        why = state.get("why")
        self.decided, self.why, self.total = state.get("decided"), None if why is None else Decision(*why), \
            state.get("total")
        # a checkpoint of the first rule knew one case only: handing over once memorising began
        self.case = state.get("case", None if self.decided is None else "memorising")
