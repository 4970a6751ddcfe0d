"""Label noise: seeded, deterministic, and always kept next to the true labels.

Every noise function returns `NoisyLabels` — the given (noisy) labels, the true ones and the `flipped` mask —
and `save_labels` writes all three, so a noisy-label file never loses the truth.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from .files import atomic_path, read_json, write_json

__all__ = [
    "NoisyLabels",
    "NOISE_TYPES",
    "CIFAR10_ASYMMETRIC",
    "add_noise",
    "symmetric_noise",
    "pairflip_noise",
    "asymmetric_noise",
    "save_labels",
    "load_labels",
    "training_labels",
]

# truck -> automobile, bird -> airplane, deer -> horse, cat <-> dog (class order of CIFAR-10)
CIFAR10_ASYMMETRIC = {9: 1, 2: 0, 4: 7, 3: 5, 5: 3}


@dataclass
class NoisyLabels:
    "A labelling of a training set: what the model is given, the truth, and which examples differ."

    given: np.ndarray  # (N,) int64: the labels training sees
    true: np.ndarray  # (N,) int64: the correct labels
    noise_type: str = "none"  # how `given` was drawn: none, symmetric, pairflip, asymmetric, file
    rate: float = 0.0  # the rate asked for
    seed: int | None = None  # the seed of the draw
    meta: dict = field(default_factory=dict)  # anything else worth keeping (data source, class map)
    truth_known: bool = True  # whether `true` is known to be right (a folder's own labels, trained on as they are,
    # are not: `true` is then only a copy of `given`)

    def __post_init__(self):
        self.given = np.asarray(self.given, dtype=np.int64)
        self.true = np.asarray(self.true, dtype=np.int64)
        if self.given.shape != self.true.shape or self.given.ndim != 1:
            raise ValueError(f"given {self.given.shape} and true {self.true.shape} labels must be 1-d, same length")

    @property
    def flipped(self) -> np.ndarray:  # (N,) bool: given label differs from the true one
        return self.given != self.true

    @property
    def truth(self) -> np.ndarray | None:  # (N,) int64: the true labels where they are known, else None
        return self.true if self.truth_known else None

    @property
    def realised_rate(self) -> float:
        "Fraction of examples whose given label is wrong."
        return float(self.flipped.mean()) if len(self.given) else 0.0

    def __len__(self) -> int:
        return len(self.given)


def _check(labels: Sequence[int] | np.ndarray, rate: float, n_classes: int) -> np.ndarray:
    y = np.asarray(labels)
    if y.ndim != 1 or (y.size and not np.issubdtype(y.dtype, np.integer)):
        raise ValueError("labels must be a 1-d array of integer class labels")
    if not 0 <= rate < 1:
        raise ValueError(f"noise rate must be in [0, 1), got {rate}")
    if n_classes < 2:
        raise ValueError(f"label noise needs at least 2 classes, got {n_classes}")
    if y.size and (y.min() < 0 or y.max() >= n_classes):
        raise ValueError(f"labels must lie in [0, {n_classes}), found {y.min()}..{y.max()}")
    return y.astype(np.int64)


def _pick_per_class(y: np.ndarray, rate: float, classes, rng: np.random.Generator) -> np.ndarray:
    "Indices of round(rate * n_c) examples of each class c in `classes`, drawn without replacement."
    picked = [rng.choice(np.flatnonzero(y == c), size=round(rate * int((y == c).sum())), replace=False)
              for c in classes]
    return np.sort(np.concatenate(picked)) if picked else np.array([], dtype=np.int64)


def symmetric_noise(
    labels: Sequence[int] | np.ndarray,  # (N,) true integer labels
    rate: float,  # fraction of each class to relabel, in [0, 1)
    n_classes: int,  # number of classes C
    seed: int = 0,  # seed of the draw
) -> NoisyLabels:
    "The paper's noise: a fraction `rate` of each class moves to a uniformly chosen *other* class."
    y = _check(labels, rate, n_classes)
    rng = np.random.default_rng(seed)
    idx = _pick_per_class(y, rate, range(n_classes), rng)
    given = y.copy()
    # an offset in 1..C-1 lands uniformly on the other classes
    given[idx] = (y[idx] + rng.integers(1, n_classes, size=len(idx))) % n_classes
    return NoisyLabels(given, y, "symmetric", rate, seed)


def pairflip_noise(
    labels: Sequence[int] | np.ndarray,  # (N,) true integer labels
    rate: float,  # fraction of each class to relabel, in [0, 1)
    n_classes: int,  # number of classes C
    seed: int = 0,  # seed of the draw
) -> NoisyLabels:
    "A fraction `rate` of each class c is relabelled (c + 1) mod C."
    y = _check(labels, rate, n_classes)
    idx = _pick_per_class(y, rate, range(n_classes), np.random.default_rng(seed))
    given = y.copy()
    given[idx] = (y[idx] + 1) % n_classes
    return NoisyLabels(given, y, "pairflip", rate, seed)


def asymmetric_noise(
    labels: Sequence[int] | np.ndarray,  # (N,) true integer labels
    rate: float,  # fraction of each mapped class to relabel, in [0, 1)
    n_classes: int,  # number of classes C
    seed: int = 0,  # seed of the draw
    class_map: Mapping[int, int] | None = None,  # source class -> wrong class; CIFAR-10's map by default
) -> NoisyLabels:
    "A fraction `rate` of each class in `class_map` moves to its mapped class; other classes stay clean."
    y = _check(labels, rate, n_classes)
    class_map = dict(CIFAR10_ASYMMETRIC if class_map is None else class_map)
    bad = {k: v for k, v in class_map.items() if not (0 <= k < n_classes and 0 <= v < n_classes) or k == v}
    if bad:
        raise ValueError(f"class map entries {bad} are not pairs of two different classes in [0, {n_classes})")
    sources = sorted(class_map)
    idx = _pick_per_class(y, rate, sources, np.random.default_rng(seed))
    given = y.copy()
    given[idx] = [class_map[c] for c in y[idx]]
    return NoisyLabels(given, y, "asymmetric", rate, seed, {"class_map": class_map})


NOISE_TYPES: dict[str, Callable[..., NoisyLabels]] = {
    "symmetric": symmetric_noise,
    "pairflip": pairflip_noise,
    "asymmetric": asymmetric_noise,
}


def add_noise(
    labels: Sequence[int] | np.ndarray,  # (N,) true integer labels
    rate: float,  # noise rate in [0, 1)
    n_classes: int,  # number of classes C
    noise_type: str = "symmetric",  # symmetric, pairflip or asymmetric
    seed: int = 0,  # seed of the draw
    **kwargs,  # passed on (asymmetric: class_map)
) -> NoisyLabels:
    "Draw noisy labels of the named type; `rate=0` returns the true labels unchanged."
    if noise_type not in NOISE_TYPES:
        raise ValueError(f"unknown noise type {noise_type!r}; choose one of {', '.join(NOISE_TYPES)}")
    return NOISE_TYPES[noise_type](labels, rate, n_classes, seed, **kwargs)


_COLUMNS = ["index", "item", "true_label", "given_label", "flipped"]


def save_labels(
    path: str | Path,  # the CSV to write; a JSON of the draw's settings goes beside it (path + ".json")
    noisy: NoisyLabels,  # the labelling
    classes: Sequence[str],  # class names, in label order
    items: Sequence[str] | None = None,  # one name per example (a path, or "digits:17"); the index if None
    columns: dict[str, np.ndarray] | None = None,  # more labellings by column name, e.g. corrected_label
) -> Path:
    "Write one labelling — index, item, true and given label (by class name), flipped — atomically."
    classes = [str(c) for c in classes]
    n = len(noisy)
    frame = pd.DataFrame({
        "index": np.arange(n),
        "item": list(items) if items is not None else [str(i) for i in range(n)],
        "true_label": np.asarray(classes, dtype=object)[noisy.true],
        "given_label": np.asarray(classes, dtype=object)[noisy.given],
        "flipped": noisy.flipped.astype(int),
    })
    for name, labels in (columns or {}).items():
        frame[name] = np.asarray(classes, dtype=object)[np.asarray(labels, dtype=np.int64)]
    path = Path(path)
    with atomic_path(path) as tmp:
        frame.to_csv(tmp, index=False)
    write_json(path.with_name(path.name + ".json"), {
        "noise_type": noisy.noise_type, "rate": noisy.rate, "seed": noisy.seed,
        "realised_rate": noisy.realised_rate, "n": n, "classes": classes, **noisy.meta,
        "truth_known": noisy.truth_known,
    })
    return path


def load_labels(
    path: str | Path,  # a CSV written by `save_labels` (or `fastgr noise`)
    classes: Sequence[str],  # the data's class names, in label order
) -> tuple[NoisyLabels, list[str], np.ndarray | None]:  # labelling, items, corrected labels (or None)
    "Read a labelling back, checking every class name; the true labels come from the file."
    path = Path(path)
    try:
        frame = pd.read_csv(path, dtype={"item": str, "true_label": str, "given_label": str,
                                         "corrected_label": str, "original_label": str},
                            keep_default_na=False, na_values=[""])  # class names as written, "NA" included
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as e:
        raise ValueError(f"{path} is not a readable labels CSV ({type(e).__name__})") from None
    missing = [c for c in ("item", "given_label", "true_label") if c not in frame]
    if missing:
        raise ValueError(f"{path} lacks the column(s) {', '.join(missing)} of a fastgr labels file")
    repeated = frame["item"][frame["item"].duplicated()].astype(str).tolist()
    if repeated:  # which of two labels of one item would count is not for fastgr to guess
        raise ValueError(f"{path} labels {len(repeated)} item(s) twice, e.g. {repeated[0]!r}; keep one row per item")
    lookup = {str(c): i for i, c in enumerate(classes)}

    def encode(col: str) -> np.ndarray:
        unknown = sorted(set(frame[col].astype(str)) - set(lookup))
        if unknown:
            raise ValueError(f"{path}: {col} has class(es) {', '.join(unknown[:5])} not among the data's "
                             f"{len(lookup)} classes")
        return frame[col].astype(str).map(lookup).to_numpy(np.int64)

    meta_path = path.with_name(path.name + ".json")
    meta = read_json(meta_path) if meta_path.exists() else {}
    noisy = NoisyLabels(encode("given_label"), encode("true_label"), meta.get("noise_type", "file"),
                        float(meta.get("rate", 0.0)), meta.get("seed"), {"file": str(path)},
                        bool(meta.get("truth_known", True)))
    corrected = encode("corrected_label") if "corrected_label" in frame else None
    return noisy, frame["item"].astype(str).tolist(), corrected


def training_labels(
    data,  # the decoded data (`fastgr.data.ImageData`)
    noise: float = 0.0,  # fraction of labels to corrupt
    noise_type: str = "symmetric",  # symmetric, pairflip or asymmetric
    seed: int = 0,  # seed of the draw
    labels_file: str | Path | None = None,  # a noisy-label CSV to use instead of drawing
) -> NoisyLabels:  # the labelling, and (`truth_known`) whether its true labels are known to be right
    "The labels a run trains on, with the truth beside them."
    y = data.train_y.numpy()
    if labels_file is not None:
        noisy, items, _ = load_labels(labels_file, data.classes)
        pos = {item: i for i, item in enumerate(items)}
        missing = [it for it in data.train_items if it not in pos]
        if missing:
            raise ValueError(f"{labels_file} does not match the data: {len(missing)} training item(s) missing, "
                             f"e.g. {missing[0]!r}")
        order = np.array([pos[it] for it in data.train_items])
        given, true = noisy.given[order], noisy.true[order]
        if not np.array_equal(true, y):
            raise ValueError(f"{labels_file}: its true labels differ from the data's on "
                             f"{int((true != y).sum())} item(s); it was drawn for other data")
        return NoisyLabels(given, true, noisy.noise_type, noisy.rate, noisy.seed, {"file": str(labels_file)},
                           noisy.truth_known)
    if noise > 0:
        return add_noise(y, noise, data.n_classes, noise_type, seed)
    return NoisyLabels(y, y, "none", 0.0, seed, truth_known=data.labels_trusted)
