"""A run's record, `config.json`: what it was asked, what that resolved to, with what, on what data (`RunRecord`).

Written first by a run and read back by `--resume`, `fastgr correct` and `fastgr issues`, always through
`RunFolder.write_record` / `read_record`. Light to import (no torch, no fastai).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Any

from .config import RunSettings, TrainConfig

__all__ = ["DataFacts", "RunRecord", "data_fingerprint"]


@dataclass(frozen=True)
class DataFacts:
    "What a run's data was: config.json's `data`."

    name: str  # the source (digits, cifar10, a folder or CSV)
    n_train: int  # training examples
    n_valid: int  # held-out examples
    classes: list[str]  # class names, in label order
    channels: int  # 1 (grayscale) or 3
    img_size: int  # the side the images were decoded to
    skipped_files: int  # unreadable image files left out
    truth_known: bool  # whether the training labels' truth is known (a folder's own labels: not)
    fingerprint: str | None = None  # of the items and labels of both splits (`data_fingerprint`); None: older run

    @classmethod
    def of(cls, data, truth_known: bool) -> DataFacts:
        "The facts of `data` (an `ImageData`)."
        return cls(data.name, len(data.train_y), len(data.valid_y), list(data.classes), data.channels, data.img_size,
                   len(data.skipped), truth_known, data_fingerprint(data))


def data_fingerprint(
    data,  # an `ImageData`
) -> str:
    """A digest of what a run trains and tests on: the classes, and every item of each split with its label. A
    resumed run must find the same (a file gone moves others between the splits and shifts every index)."""
    import hashlib
    import json

    parts = [list(data.classes), list(data.train_items), [int(v) for v in data.train_y],
             list(data.valid_items), [int(v) for v in data.valid_y]]
    return hashlib.sha256(json.dumps(parts).encode()).hexdigest()[:16]


@dataclass(frozen=True)
class RunRecord:
    """A run's `config.json`: what it was asked (`config`), what that resolved to (`resolved`, None until the
    setting is known: a `--tune` run writes the record before tuning), the versions it ran with, its command line,
    its data, and the processes it trained on. Written and read through `RunFolder.write_record`/`read_record`."""

    config: TrainConfig
    resolved: RunSettings | None
    versions: dict[str, str]
    command: list[str]
    data: DataFacts
    processes: int = 1

    def to_dict(self) -> dict[str, Any]:
        return {"config": self.config.to_dict(), "resolved": None if self.resolved is None else self.resolved.to_dict(),
                "versions": dict(self.versions), "command": list(self.command), "data": asdict(self.data),
                "processes": self.processes}

    @classmethod
    def from_dict(cls, d: dict) -> RunRecord:
        "From `config.json` (a record of an older fastgr: the keys it lacks take their defaults)."
        resolved = d.get("resolved")
        data = dict(d["data"])
        data.setdefault("truth_known", True)
        data.setdefault("fingerprint", None)
        return cls(TrainConfig.from_dict(d["config"]), None if resolved is None else RunSettings(**resolved),
                   dict(d.get("versions", {})), list(d.get("command", [])),
                   DataFacts(**{f.name: data[f.name] for f in fields(DataFacts)}), int(d.get("processes", 1)))
