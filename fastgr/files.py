"""Files written atomically: an interruption (Ctrl-C, a kill, a full disk) never leaves half a file behind.

Every file fastgr writes goes through `atomic_path`: a temporary file beside the target, renamed over it in one
step. JSON is strict: a non-finite number is written as `null`, never as `NaN` or `Infinity`.
"""

from __future__ import annotations

import contextlib
import errno
import json
import math
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

__all__ = ["atomic_path", "write_text", "write_json", "read_json", "TMP_SUFFIX"]

TMP_SUFFIX = ".tmp"  # temporary files are `.NAME.XXXX.tmp` beside NAME

_UMASK = os.umask(0)
os.umask(_UMASK)


@contextlib.contextmanager
def atomic_path(
    path: str | Path,  # the file to create or replace
) -> Iterator[Path]:
    "Yield a temporary path beside `path`; on success it replaces `path` in one step, on error it is removed."
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=TMP_SUFFIX, dir=path.parent)
    except OSError as e:  # name the user's file, not the temporary one
        raise type(e)(e.errno, e.strerror, str(path)) from None
    os.close(fd)
    try:
        yield Path(tmp)
        os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp makes 0600 files; give the usual permissions
        os.replace(tmp, path)
    except BaseException as e:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        if isinstance(e, OSError) and e.filename in (tmp, Path(tmp)):
            raise type(e)(e.errno, e.strerror, str(path)) from None
        if isinstance(e, Exception) and _disk_full(path.parent, e):  # torch.save says only "unexpected pos"
            raise OSError(errno.ENOSPC, "no space left on device (the file it replaces is untouched)",
                          str(path)) from None
        raise


def _disk_full(folder: Path, e: Exception) -> bool:
    "Whether a write failed for want of space: said so by the error, or the disk has (next to) nothing left."
    if isinstance(e, OSError) and e.errno == errno.ENOSPC:
        return True
    try:
        return shutil.disk_usage(folder).free < 1 << 20
    except OSError:
        return False


def write_text(path: str | Path, text: str) -> Path:
    "Write `text` to `path` atomically."
    with atomic_path(path) as tmp:
        tmp.write_text(text)
    return Path(path)


def write_json(path: str | Path, obj: Any) -> Path:
    "Write `obj` as indented, strict JSON to `path` atomically (non-finite numbers become null)."
    return write_text(path, json.dumps(_finite(obj), indent=2, allow_nan=False, default=_jsonable) + "\n")


def read_json(path: str | Path) -> Any:
    return json.loads(Path(path).read_text())


def _finite(o: Any) -> Any:
    "`o` with every float that is NaN or infinite replaced by None (strict JSON has no token for them)."
    if isinstance(o, float):
        return o if math.isfinite(o) else None
    if isinstance(o, dict):
        return {k: _finite(v) for k, v in o.items()}
    if isinstance(o, (list, tuple)):
        return [_finite(v) for v in o]
    if hasattr(o, "item") and getattr(o, "ndim", 1) == 0:
        return _finite(o.item())
    return o


def _jsonable(o: Any) -> Any:
    if isinstance(o, Path):
        return str(o)
    if hasattr(o, "item"):
        return o.item()
    if hasattr(o, "tolist"):
        return o.tolist()
    raise TypeError(f"cannot write {type(o).__name__} as JSON")
