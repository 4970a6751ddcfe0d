"""`Reporter`: what a run tells about its progress. The library never prints; the CLI renders these calls."""

from __future__ import annotations

from typing import Any

__all__ = ["Reporter", "COLUMN_NAMES"]

# each metrics.csv column's name in the console's training table and in curves.png
COLUMN_NAMES = {"epoch": "epoch", "train_loss": "train loss", "valid_loss": "test loss", "test_acc": "test acc",
                "train_acc_given": "fit given", "train_acc_true": "fit true", "gr_spread": "spread", "gr_ess": "ess",
                "gr_mean_p": "mean p", "seconds": "s"}


class Reporter:
    "Receives a run's progress (the CLI renders it); the base class ignores everything."

    def phase(self, name: str, epochs: int, start: int = 0) -> None:
        "A training phase begins: `name` (train, retrain), `epochs` in all, resumed after `start`."

    def batch(self, i: int, n: int) -> None:
        "Training batch `i` of `n` of the current epoch is done."

    def epoch(self, row: dict[str, Any]) -> None:
        "An epoch is done; `row` is its line of metrics.csv."

    def note(self, text: str, level: str = "info") -> None:
        "Something worth telling the user; `level` is info or warn."
