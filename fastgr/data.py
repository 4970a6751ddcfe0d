"""Data sources (`ImageData`): decoded once into uint8 tensors, or, too large for that, listed and streamed.

Sources (docs/design.md, "Data sources"): `digits` (scikit-learn's bundled 8x8 digits, offline), `cifar10` and
`cifar100` (fastai's downloads), an image folder, or a CSV of `path,label[,is_valid]`. A folder or CSV whose decoded
images fit `MEMORY_BUDGET` is held in memory and `fastgr.loader.TensorDL` batches it on the training device; a
larger one (or any, with `in_memory="no"`) keeps only its file list, verified, and `fastgr.stream.StreamDL`
decodes it in worker processes. Either way every image is resized the same way (`fit_square`): its short side to
the image size, then the centre square.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import torch
from torch import Tensor
from torch.nn import functional as F

from .config import IN_MEMORY
from .images import IMAGE_EXTENSIONS, decode_files, decode_images, find_unreadable, first_size, fit_square
from .listing import list_csv, list_folder, stratified_split

__all__ = ["ImageData", "SOURCES", "load_data", "load_digits", "load_cifar", "load_folder", "load_csv",
           "decode_images", "decode_files", "stratified_split", "fit_square", "find_unreadable", "IMAGE_EXTENSIONS",
           "IN_MEMORY", "MEMORY_BUDGET"]

# decoded training and held-out images (uint8: N x C x side^2 bytes) a folder or CSV may take in memory under
# "auto"; beyond it the files stream from disk (docs/design.md, "Streamed data")
MEMORY_BUDGET = 2 * 1024**3



@dataclass
class ImageData:
    """A labelled image classification set: uint8 pixels decoded once (`train_x`, `valid_x`), or, streamed, the
    verified files (`train_paths`, `valid_paths`) with the size and channels they decode to; integer labels and
    names of both."""

    name: str  # where it came from: digits, cifar10, a folder or a CSV
    classes: list[str]  # class names, in label order
    train_x: Tensor | None  # (N, C, H, W) uint8; None when streamed
    train_y: Tensor  # (N,) int64: the labels the data came with
    valid_x: Tensor | None  # (M, C, H, W) uint8: held-out images, labels assumed clean; None when streamed
    valid_y: Tensor  # (M,) int64
    train_items: list[str]  # one name per training image: a path, or e.g. "digits:17"
    valid_items: list[str]  # one name per held-out image
    augment: str = "crop+flip"  # the training augmentation that suits the data: crop+flip, crop or none
    labels_trusted: bool = False  # True for curated benchmarks: their labels count as the truth
    skipped: list[tuple[str, str]] = field(default_factory=list)  # unreadable files: (path, reason)
    train_paths: list[Path] | None = None  # streamed: the training files, in the order of train_y
    valid_paths: list[Path] | None = None  # streamed: the held-out files
    size: int | None = None  # streamed: the side every image decodes to
    n_channels: int | None = None  # streamed: 1 (grayscale) or 3

    @property
    def in_memory(self) -> bool:
        return self.train_x is not None

    @property
    def n_classes(self) -> int:
        return len(self.classes)

    @property
    def channels(self) -> int:
        return int(self.train_x.shape[1]) if self.in_memory else int(self.n_channels)

    @property
    def img_size(self) -> int:
        return int(self.train_x.shape[-1]) if self.in_memory else int(self.size)

    def channel_stats(self, sample: int = 512) -> tuple[list[float], list[float]]:
        """Per-channel mean and standard deviation of the training pixels, in [0, 1] units: of all of them, or,
        streamed, of `sample` training images drawn with a fixed seed."""
        x = self.train_x
        if x is None:
            pick = np.random.default_rng(0).permutation(len(self.train_paths))[:sample]
            x = decode_images([self.train_paths[i] for i in sorted(pick)], (self.size, self.size), self.channels)
        x = x.double().div_(255).transpose(0, 1).reshape(self.channels, -1)
        return x.mean(1).tolist(), x.std(1).clamp_min(1e-3).tolist()

    def holdout(
        self,
        held: np.ndarray,  # (N,) bool: the training examples to hold out
        held_y: np.ndarray,  # (N,) the labels the held-out ones keep (the noisy ones, when tuning)
        name: str,  # the new set's name
    ) -> ImageData:
        "A training set of the examples not `held`, held out against the `held` ones: the tuner's split."
        keep = ~held

        def pick(seq, mask):
            return None if seq is None else [v for v, m in zip(seq, mask) if m]

        return replace(
            self, name=name, train_x=None if self.train_x is None else self.train_x[keep], train_y=self.train_y[keep],
            valid_x=None if self.train_x is None else self.train_x[held],
            valid_y=torch.as_tensor(np.asarray(held_y)[held]), train_items=pick(self.train_items, keep),
            valid_items=pick(self.train_items, held), skipped=[], train_paths=pick(self.train_paths, keep),
            valid_paths=pick(self.train_paths, held))


# -- sources ------------------------------------------------------------------------------------------

def load_digits(
    img_size: int | None = 16,  # side of the square images; the originals are 8x8
    **_,
) -> ImageData:
    "scikit-learn's bundled handwritten digits (1,797 8x8 images, 10 classes) with a fixed stratified split."
    from sklearn.datasets import load_digits as sk_digits
    from sklearn.model_selection import train_test_split

    d = sk_digits()
    x = torch.as_tensor(d.images, dtype=torch.float32)[:, None] * (255.0 / 16.0)  # (N, 1, 8, 8), 0..16 -> 0..255
    size = img_size or 16
    if size != 8:
        x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False)
    x = x.round_().clamp_(0, 255).to(torch.uint8)
    y = torch.as_tensor(d.target, dtype=torch.long)
    tr, te = train_test_split(np.arange(len(y)), test_size=0.2, random_state=0, stratify=d.target)
    return ImageData(
        "digits", [str(c) for c in range(10)], x[tr], y[tr], x[te], y[te],
        [f"digits:{i}" for i in tr], [f"digits:{i}" for i in te], augment="none", labels_trusted=True,
    )


def load_cifar(
    name: str = "cifar10",  # cifar10 or cifar100
    img_size: int | None = None,  # side of the images; CIFAR's own is 32
    **_,
) -> ImageData:
    "CIFAR-10/100 through fastai's downloads (cached under ~/.fastai); offline, an error that names the fix."
    from fastai.data.external import URLs, untar_data

    url = {"cifar10": URLs.CIFAR, "cifar100": URLs.CIFAR_100}[name]
    try:
        path = untar_data(url)
    except Exception as e:  # noqa: BLE001 - any failure to fetch means the same fix
        raise RuntimeError(
            f"could not download {name} from fastai ({type(e).__name__}; offline?): pass a local copy instead, "
            f"a folder with train/ and test/ holding one sub-folder per class, e.g. `fastgr train ~/data/{name}`"
        ) from e
    data = load_folder(path, img_size=img_size or 32)
    return replace(data, name=name, labels_trusted=True)


def _build(name: str, items: list[tuple[Path, str]], is_valid: np.ndarray, classes: list[str] | None,
           img_size: int | None, display_root: Path, in_memory: str = "auto") -> ImageData:
    paths = [p for p, _ in items]
    labels = [c for _, c in items]
    if is_valid.all():
        raise ValueError(f"{name} has no training rows: every one is held out (is_valid)")
    train_labels = sorted({c for c, v in zip(labels, is_valid) if not v})
    if classes:
        twice = sorted({c for c in classes if list(classes).count(c) > 1})
        if twice:
            raise ValueError(f"the class list names {', '.join(map(repr, twice))} more than once")
    classes = list(classes) if classes else train_labels
    lookup = {c: i for i, c in enumerate(classes)}
    unknown = sorted({c for c in labels if c not in lookup})
    if unknown:
        raise ValueError(f"label(s) {', '.join(map(repr, unknown[:5]))} are not in the class list "
                         f"({', '.join(classes[:10])}{', ...' if len(classes) > 10 else ''})")
    if len(classes) < 2:
        raise ValueError(f"{name} has {len(classes)} class(es); classification needs at least 2")
    size, channels = first_size(paths)
    size = img_size or size
    if in_memory not in IN_MEMORY:
        raise ValueError(f"unknown in_memory {in_memory!r}; choose one of {', '.join(IN_MEMORY)}")
    if in_memory == "no" or (in_memory == "auto" and len(paths) * channels * size * size > MEMORY_BUDGET):
        return _build_streamed(name, paths, labels, lookup, is_valid, classes, size, channels, display_root)
    arrays, reasons = decode_files(paths, size, channels)
    skipped = [(str(p), r) for p, a, r in zip(paths, arrays, reasons) if a is None]
    ok = np.array([a is not None for a in arrays], bool)
    y = np.array([lookup[c] for c in labels], np.int64)

    def pick(mask):
        keep = np.flatnonzero(mask & ok)
        x = torch.from_numpy(np.stack([arrays[i] for i in keep])) if len(keep) else \
            torch.zeros(0, channels, size, size, dtype=torch.uint8)
        names = [_display(paths[i], display_root) for i in keep]
        return x, torch.from_numpy(y[keep]), names

    tx, ty, titems = pick(~is_valid)
    vx, vy, vitems = pick(is_valid)
    if len(ty) == 0:
        raise ValueError(f"{name}: no readable training images ({_why(skipped)})")
    if len(vy) == 0:
        raise ValueError(f"{name}: no readable held-out images; add a valid/ or test/ folder or raise --valid-pct")
    return ImageData(name, classes, tx, ty, vx, vy, titems, vitems, "crop+flip", False, skipped)


def _build_streamed(name: str, paths: list[Path], labels: list[str], lookup: dict[str, int], is_valid: np.ndarray,
                    classes: list[str], size: int, channels: int, display_root: Path) -> ImageData:
    "The files, verified, for `fastgr.stream.StreamDL` to decode batch by batch."
    reasons = find_unreadable(paths, channels)
    ok = np.array([not r for r in reasons], bool)
    skipped = [(str(p), r) for p, r in zip(paths, reasons) if r]
    y = np.array([lookup[c] for c in labels], np.int64)
    train, held = np.flatnonzero(~is_valid & ok), np.flatnonzero(is_valid & ok)
    if len(train) == 0:
        raise ValueError(f"{name}: no readable training images ({_why(skipped)})")
    if len(held) == 0:
        raise ValueError(f"{name}: no readable held-out images; add a valid/ or test/ folder or raise --valid-pct")
    return ImageData(name, classes, None, torch.from_numpy(y[train]), None, torch.from_numpy(y[held]),
                     [_display(paths[i], display_root) for i in train],
                     [_display(paths[i], display_root) for i in held],
                     "crop+flip", False, skipped, [paths[i] for i in train], [paths[i] for i in held], size, channels)


def _why(skipped: list[tuple[str, str]]) -> str:
    "How many files were skipped, and how many of those do not exist."
    gone = [p for p, r in skipped if r.startswith("FileNotFoundError")]
    return f"{len(skipped)} unreadable" + (f", {len(gone)} of them not found, e.g. {gone[0]}" if gone else "")


def _display(p: Path, root: Path) -> str:
    try:
        return p.relative_to(root).as_posix()
    except ValueError:
        return str(p)


def load_folder(
    path: str | Path,  # train/ and valid/ (or test/) with one sub-folder per class, or one tree of class folders
    img_size: int | None = None,  # side of the decoded square images; the first image's size if None
    valid_pct: float = 0.2,  # held-out fraction when there is a single tree
    seed: int = 0,  # seed of that split
    classes: Sequence[str] | None = None,  # class names in label order; the training folders' names if None
    in_memory: str = "auto",  # auto (if the decoded images fit MEMORY_BUDGET), yes, or no (streamed)
    **_,
) -> ImageData:
    "An image folder: one sub-folder per class (CIFAR-100's coarse/fine nesting gives classes like 'fish/trout')."
    root = Path(path)
    items, is_valid, loose = list_folder(root, valid_pct, seed)
    data = _build(str(root), items, is_valid, classes, img_size, root, in_memory)
    return replace(data, skipped=loose + data.skipped)


def load_csv(
    path: str | Path,  # a CSV with columns path,label and optionally is_valid; paths relative to the CSV's folder
    img_size: int | None = None,  # side of the decoded square images; the first image's size if None
    valid_pct: float = 0.2,  # held-out fraction when there is no is_valid column
    seed: int = 0,  # seed of that split
    classes: Sequence[str] | None = None,  # class names in label order; the training labels, sorted, if None
    in_memory: str = "auto",  # auto (if the decoded images fit MEMORY_BUDGET), yes, or no (streamed)
    **_,
) -> ImageData:
    "A CSV of `path,label[,is_valid]`; every label must be in the class list."
    path = Path(path)
    items, is_valid = list_csv(path, valid_pct, seed)
    return _build(str(path), items, is_valid, classes, img_size, path.parent, in_memory)


SOURCES: dict[str, Callable[..., ImageData]] = {
    "digits": load_digits,
    "cifar10": lambda **kw: load_cifar("cifar10", **kw),
    "cifar100": lambda **kw: load_cifar("cifar100", **kw),
}


def load_data(
    source: str | Path,  # digits, cifar10, cifar100, an image folder, or a CSV file
    img_size: int | None = None,  # side of the decoded square images; each source has its own default
    valid_pct: float = 0.2,  # held-out fraction for a folder or CSV without its own split
    seed: int = 0,  # seed of that split
    classes: Sequence[str] | None = None,  # class names in label order (folder, CSV)
    in_memory: str = "auto",  # a folder or CSV: auto (if the decoded images fit MEMORY_BUDGET), yes, no (streamed)
) -> ImageData:
    "Load any data source by name or path into an `ImageData`."
    key = str(source)
    if key in SOURCES:
        return SOURCES[key](img_size=img_size)
    path = Path(key)
    if path.is_dir():
        return load_folder(path, img_size, valid_pct, seed, classes, in_memory)
    if path.is_file():
        if path.suffix.lower() == ".csv":
            return load_csv(path, img_size, valid_pct, seed, classes, in_memory)
        raise ValueError(f"{path} is neither a folder nor a .csv file")
    if path.exists():
        raise ValueError(f"{path} is not a regular file or folder")
    raise FileNotFoundError(
        2, f"unknown dataset or missing path {key!r} (datasets: {', '.join(SOURCES)}; or a folder or CSV)", key)
