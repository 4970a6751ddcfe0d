"""Image folders and CSVs listed before anything is decoded: every image's path, its class name and whether it is
held out (`list_folder`, `list_csv`), and the stratified split of a single tree (`stratified_split`).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .images import IMAGE_EXTENSIONS, walk_images

__all__ = ["list_folder", "list_csv", "stratified_split", "NO_CLASS"]

NO_CLASS = "not in a class sub-folder: its class is unknown"  # why an image beside the class folders is skipped
BROKEN_LINK = "a symbolic link to nothing"  # why an image link whose target is gone is skipped


def stratified_split(labels: np.ndarray, valid_pct: float, seed: int) -> np.ndarray:
    "Boolean mask of the held-out examples: `valid_pct` of each class, at least one where a class has two."
    if not 0 < valid_pct < 1:
        raise ValueError(f"valid_pct must be in (0, 1) to split one tree into train and held-out, got {valid_pct}")
    rng = np.random.default_rng(seed)
    mask = np.zeros(len(labels), bool)
    for c in np.unique(labels):
        idx = np.flatnonzero(labels == c)
        k = min(len(idx) - 1, max(1, round(valid_pct * len(idx)))) if len(idx) > 1 else 0
        mask[rng.choice(idx, size=k, replace=False)] = True
    return mask


def _split_tree(root: Path) -> tuple[Path, Path | None]:
    "The training tree and the held-out one of a folder: train/ + valid/ (or test/), else the whole folder."
    train = root / "train"
    if train.is_dir():
        for held_out in ("valid", "val", "test"):
            if (root / held_out).is_dir():
                return train, root / held_out
        return train, None
    return root, None


def _list_images(root: Path) -> tuple[list[tuple[Path, str]], list[tuple[str, str]]]:
    """(path, class) of every image below `root`, the class its folder relative to `root` (e.g. 'cat'); and the
    images directly in `root`, which have no class: skipped, with the reason."""
    out, loose = [], []
    files, broken = walk_images(root)  # symbolic links followed: a class folder may be one
    for p in files:
        if p.parent == root:
            loose.append((str(p), NO_CLASS))
        else:
            out.append((p, p.parent.relative_to(root).as_posix()))
    return out, loose + [(str(p), BROKEN_LINK) for p in broken]


def list_folder(
    root: Path,  # train/ and valid/ (or test/) with one sub-folder per class, or one tree of class folders
    valid_pct: float,  # held-out fraction when there is a single tree
    seed: int,  # seed of that split
) -> tuple[list[tuple[Path, str]], np.ndarray, list[tuple[str, str]]]:  # (path, class) items, held out, skipped
    "A folder's images with their classes (their folder below the tree), which are held out, and those skipped."
    if not root.is_dir():
        raise FileNotFoundError(2, "no such folder", str(root))
    train_root, held_root = _split_tree(root)
    items, loose = _list_images(train_root)
    if not items:
        raise ValueError(f"{root} holds no images in class sub-folders ({', '.join(sorted(IMAGE_EXTENSIONS))})")
    if held_root is not None:
        held, loose_held = _list_images(held_root)
        loose += loose_held
        is_valid = np.r_[np.zeros(len(items), bool), np.ones(len(held), bool)]
        items = items + held
    else:
        is_valid = stratified_split(np.array([c for _, c in items]), valid_pct, seed)
    return items, is_valid, loose


def list_csv(
    path: Path,  # a CSV with columns path,label and optionally is_valid; paths relative to the CSV's folder
    valid_pct: float,  # held-out fraction when there is no is_valid column
    seed: int,  # seed of that split
) -> tuple[list[tuple[Path, str]], np.ndarray]:  # (path, class) items, held out
    "A CSV's rows as (path, class) items and which are held out."
    import pandas as pd

    try:
        # labels are class names as written ("01", "NA" and "None" included): only an empty cell is missing
        frame = pd.read_csv(path, dtype={"path": str, "label": str}, keep_default_na=False, na_values=[""])
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as e:
        raise ValueError(f"{path} is not a readable CSV ({type(e).__name__})") from None
    missing = [c for c in ("path", "label") if c not in frame.columns]
    if missing:
        raise ValueError(f"{path} lacks the column(s) {', '.join(missing)}; expected path,label[,is_valid]")
    if frame["path"].isna().any() or frame["label"].isna().any():
        raise ValueError(f"{path} has rows with an empty path or label")
    repeated = frame[frame["path"].duplicated(keep=False)]
    if len(repeated):  # which of two rows of one image would count is not for fastgr to guess (as `--labels`)
        first = repeated["path"].iloc[0]
        labels = sorted(set(repeated.loc[repeated["path"] == first, "label"]))
        what = f"with labels {', '.join(map(repr, labels))}" if len(labels) > 1 else "twice"
        raise ValueError(f"{path} lists {repeated['path'].nunique()} image(s) more than once, e.g. {first!r} "
                         f"{what}; keep one row per image")
    base = path.parent
    items = [((base / p) if not Path(p).is_absolute() else Path(p), str(lbl))
             for p, lbl in zip(frame["path"], frame["label"])]
    missing = [p for p, _ in items if not p.exists()]
    if len(missing) == len(items):
        raise FileNotFoundError(2, f"none of the {len(items)} paths of {path.name} exists: a relative path is taken "
                                   f"from the CSV's own folder {base}, e.g. {missing[0]}", str(path))
    if "is_valid" in frame.columns:
        is_valid = frame["is_valid"].map(_truthy).to_numpy(bool)
    else:
        is_valid = stratified_split(frame["label"].astype(str).to_numpy(), valid_pct, seed)
    return items, is_valid


def _truthy(v) -> bool:
    s = str(v).strip().lower()
    if s in ("1", "true", "yes", "y", "t"):
        return True
    if s in ("0", "false", "no", "n", "f", "", "nan"):
        return False
    raise ValueError(f"is_valid must be true/false or 1/0, got {v!r}")
