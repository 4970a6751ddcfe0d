"""The run folder: every file a training run writes, and the guarantees that make it safe to interrupt.

`RunFolder` owns a run's files (docs/design.md, "The run folder"): `config.json`, `metrics.csv`, `labels.csv`,
`checkpoint.pth`, `result.json`, `examples.csv`, plots, `learner.pkl`, `summary.json`, and the sub-folders of a
tuning (`tune/NN`) and of a retraining (`retrain/`); `fastgr.training.RunLog` is the fastai callback that writes a
phase's rows and checkpoints through it. Nothing in a folder is touched before every input has been checked; one
process at a time holds its lock; every file is replaced atomically, so a kill at any moment leaves a folder that
`--resume` finishes to the same files.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pandas as pd
import torch

from .files import TMP_SUFFIX, atomic_path, read_json, write_json, write_text
from .record import RunRecord
from .report import Reporter

__all__ = ["RunFolder", "Reporter", "RunExistsError", "RunLockedError", "OWNED_FILES", "LOCK_NAME"]

LOCK_NAME = ".fastgr.lock"
RECORD = "config.json"  # the run's record (`RunRecord`), written first
# what `--overwrite` removes: every file a run (or `fastgr correct` on it) writes; other files stay
OWNED_FILES = (
    "config.json", "metrics.csv", "labels.csv", "labels.csv.json", "summary.json", "result.json", "checkpoint.pth",
    "learner.pkl", "examples.csv", "curves.png", "weights_vs_p.png", "weights_flipped_clean.png", "correction.json",
    "skipped.txt", "tune.csv", "tune.json", "labels_corrected.csv", "labels_corrected.csv.json",
    "labels_corrected.report.json", "label_issues.csv", "label_issues.png",
)
OWNED_DIRS = ("retrain", "tune")


class RunExistsError(FileExistsError):
    "The run folder holds another run; nothing was written."


class RunLockedError(RuntimeError):
    "Another fastgr process is writing the run folder; nothing was written."


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process
        return True
    return True


class RunFolder:
    """One run's folder (or a phase's sub-folder: `sub`). Its methods are the only code that writes there."""

    def __init__(
        self,
        path: str | Path,  # the folder
        top: RunFolder | None = None,  # the run's own folder, for a phase's sub-folder
        writes: bool = True,  # False: reads only, every write is skipped (the ranks after the first of a launch)
    ):
        self.path = Path(path)
        self.top = top or self
        self.writes = writes
        self._created: list[Path] = []

    def __repr__(self) -> str:
        return f"RunFolder({str(self.path)!r})"

    def __truediv__(self, name: str) -> Path:
        return self.path / name

    def sub(self, name: str) -> RunFolder:
        "A phase's sub-folder (`retrain`, `tune/00`): same lock, own files."
        return RunFolder(self.path / name, top=self.top, writes=self.writes)

    # -- before anything is written -----------------------------------------------------------------
    @property
    def interrupted(self) -> bool:
        """A run `resume` can continue: started (config.json, written first) and not finished (no summary.json).
        With or without a checkpoint: a `--tune` run cut while tuning has none of its own, only finished settings."""
        return (self.path / "config.json").exists() and not (self.path / "summary.json").exists()

    def check(self, overwrite: bool, resume: bool) -> None:
        "Raise if this folder may not be written as asked. Reads only."
        p = self.path
        if p.exists() and not p.is_dir():
            raise RunExistsError(f"{p} exists and is not a folder")
        if resume:
            if not (p / "config.json").exists():
                raise FileNotFoundError(2, "no run to resume (no config.json)", str(p))
            if (p / "summary.json").exists():
                raise RunExistsError(f"{p} is a finished run; nothing to resume")
            return
        if p.exists() and any(q.name != LOCK_NAME for q in p.iterdir()) and not overwrite:
            raise RunExistsError(f"{p} exists; pass --overwrite to write into it, or --resume to continue it")

    @contextlib.contextmanager
    def open(self, overwrite: bool = False) -> Iterator[RunFolder]:
        """Hold the folder for a run: create it, take its lock, and with `overwrite` remove the older run's files.

        On the way out the lock is released; a folder this call created that holds nothing of a run is removed
        again (a run that failed before writing leaves nothing behind). A folder that only reads is not touched."""
        if not self.writes:
            yield self
            return
        missing = []
        for d in (self.path, *self.path.parents):
            if d.exists():
                break
            missing.append(d)
        self.path.mkdir(parents=True, exist_ok=True)
        self._created = missing
        self._lock()
        try:
            self._remove_temporaries()
            if overwrite:
                self.clear()
            yield self
        finally:
            self._unlock()
            if self._created and not any(self.path.iterdir()):
                for d in self._created:  # deepest first
                    with contextlib.suppress(OSError):
                        d.rmdir()

    def _lock(self) -> None:
        # not the `filelock` package: the refusal names the process that holds the folder, and filelock up to 3.29
        # truncates the lock file at every attempt, the holder's pid with it (its issue #591, fixed in July 2026)
        lock = self.path / LOCK_NAME
        me = {"pid": os.getpid(), "host": socket.gethostname(), "since": time.time()}
        try:
            fd = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except PermissionError as e:
            raise PermissionError(e.errno, "cannot write in the run folder", str(self.path)) from None
        except FileExistsError:
            try:
                held = json.loads(lock.read_text())
            except (OSError, ValueError):
                held = {}
            pid = held.get("pid")
            if isinstance(pid, int) and held.get("host") == me["host"] and pid != me["pid"] and _alive(pid):
                raise RunLockedError(f"{self.path} is being written by fastgr process {pid}; wait for it to "
                                     f"finish, or stop it and then --resume") from None
            write_json(lock, me)  # a dead process's lock (a kill): taken over
            return
        with os.fdopen(fd, "w") as f:
            json.dump(me, f)

    def _unlock(self) -> None:
        with contextlib.suppress(FileNotFoundError):
            (self.path / LOCK_NAME).unlink()

    def _remove_temporaries(self) -> None:
        "Temporary files a kill left behind (`atomic_path` never got to rename them)."
        for tmp in self.path.rglob(f".*{TMP_SUFFIX}"):
            if any(tmp.name.startswith(f".{name}.") for name in OWNED_FILES):
                tmp.unlink()

    def clear(self) -> None:
        """Remove an older run's files: config.json first, so that a kill midway leaves no run to resume by
        mistake. Files that are not fastgr's stay."""
        for name in OWNED_FILES:
            with contextlib.suppress(FileNotFoundError):
                (self.path / name).unlink()
        for name in OWNED_DIRS:
            d = self.path / name
            if not d.is_dir():
                continue
            for p in sorted(d.rglob("*"), key=lambda q: len(q.parts), reverse=True):
                if p.is_file() and p.name in OWNED_FILES:
                    p.unlink()
                elif p.is_dir() and not any(p.iterdir()):
                    p.rmdir()
            if not any(d.iterdir()):
                d.rmdir()

    # -- the run's files ------------------------------------------------------------------------------
    def has(self, name: str) -> bool:
        return (self.path / name).exists()

    def read(self, name: str) -> Any:
        "A JSON file of the folder; a broken one names itself and the way out."
        path = self.path / name
        try:
            return read_json(path)
        except json.JSONDecodeError as e:
            raise ValueError(f"{path} is not valid JSON ({e.msg}, line {e.lineno}); restore it or start the run "
                             f"again with --overwrite") from None

    def write(self, name: str, obj: Any) -> Path:
        "A JSON file, replaced atomically."
        if not self.writes:
            return self.path / name
        return write_json(self.path / name, obj)

    def read_record(self) -> RunRecord:
        "The run's `config.json`, typed; a folder without one is named as not a run."
        if not self.has(RECORD):
            raise FileNotFoundError(2, "not a fastgr run (no config.json)", str(self.path / RECORD))
        try:
            return RunRecord.from_dict(self.read(RECORD))
        except (KeyError, TypeError) as e:
            raise ValueError(f"{self.path / RECORD} is not a fastgr run record ({type(e).__name__}: {e}); restore it "
                             "or start the run again with --overwrite") from None

    def write_record(self, record: RunRecord) -> Path:
        "The run's `config.json`, replaced atomically."
        return self.write(RECORD, record.to_dict())

    def write_text(self, name: str, text: str) -> Path:
        if not self.writes:
            return self.path / name
        return write_text(self.path / name, text)

    def write_csv(self, name: str, frame: pd.DataFrame) -> Path:
        if not self.writes:
            return self.path / name
        with atomic_path(self.path / name) as tmp:
            frame.to_csv(tmp, index=False)
        return self.path / name

    def save_figure(self, name: str, fig) -> Path:
        if not self.writes:
            return self.path / name
        from .plots import save_figure

        return save_figure(fig, self.path / name)

    def mkdir(self) -> None:
        "Create the folder (a phase's sub-folder) if it is missing."
        if self.writes:
            self.path.mkdir(parents=True, exist_ok=True)

    def save_checkpoint(self, state: dict) -> None:
        if not self.writes:
            return
        with atomic_path(self.path / "checkpoint.pth") as tmp:
            torch.save(state, tmp)

    def load_checkpoint(self) -> dict | None:
        path = self.path / "checkpoint.pth"
        if not path.exists():
            return None
        try:
            return torch.load(path, map_location="cpu", weights_only=False)
        except Exception as e:  # noqa: BLE001 - any unreadable checkpoint means the same fix
            raise ValueError(f"{path} is unreadable ({type(e).__name__}); delete it to restart this phase from "
                             "scratch, or start the run again with --overwrite") from None

    def remove(self, name: str) -> None:
        if not self.writes:
            return
        with contextlib.suppress(FileNotFoundError):
            (self.path / name).unlink()

    def export(self, learn, drop: tuple[type, ...] = ()) -> Path:
        """`learner.pkl` for `load_learner`, without the callbacks of type `drop` (bookkeeping of this run)."""
        import warnings

        if not self.writes:
            return self.path / "learner.pkl"
        keep = [cb for cb in learn.cbs if isinstance(cb, drop)]
        learn.remove_cbs(keep)
        try:
            with atomic_path(self.path / "learner.pkl") as tmp, warnings.catch_warnings():
                warnings.simplefilter("ignore")
                learn.export(tmp.resolve())
        finally:
            learn.add_cbs(keep)
        return self.path / "learner.pkl"

    def training_seconds(self) -> float:
        "Training seconds of the run: its own phase, every tuning setting before it and a retraining after it."
        parts = [self.path / "result.json", *sorted(self.path.glob("tune/*/result.json")),
                 self.path / "retrain" / "result.json"]
        return sum(read_json(p)["seconds"] for p in parts if p.exists())
