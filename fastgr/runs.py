"""Run directories: what a training run writes, written atomically so an interruption never leaves half a file."""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

__all__ = ["Reporter", "atomic_path", "write_text", "write_json", "read_json"]

_UMASK = os.umask(0)
os.umask(_UMASK)


@contextlib.contextmanager
def atomic_path(
    path: str | Path,  # the file to create or replace
) -> Iterator[Path]:
    "Yield a temporary path beside `path`; on success it replaces `path` in one step, on error it is removed."
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        yield Path(tmp)
        os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp makes 0600 files; give the usual permissions
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def write_text(path: str | Path, text: str) -> Path:
    "Write `text` to `path` atomically."
    with atomic_path(path) as tmp:
        tmp.write_text(text)
    return Path(path)


def write_json(path: str | Path, obj: Any) -> Path:
    "Write `obj` as indented JSON to `path` atomically."
    return write_text(path, json.dumps(obj, indent=2, sort_keys=False, default=_jsonable) + "\n")


def read_json(path: str | Path) -> Any:
    return json.loads(Path(path).read_text())


def _jsonable(o: Any) -> Any:
    if isinstance(o, Path):
        return str(o)
    if hasattr(o, "item"):
        return o.item()
    if hasattr(o, "tolist"):
        return o.tolist()
    raise TypeError(f"cannot write {type(o).__name__} as JSON")


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
