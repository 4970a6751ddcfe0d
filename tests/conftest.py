import os

os.environ.setdefault("MPLBACKEND", "Agg")

import pytest  # noqa: E402
import torch  # noqa: E402
from hypothesis import HealthCheck, settings  # noqa: E402

# deterministic CI: the same examples on every run, no time limits on a slow machine
settings.register_profile(
    "ci", derandomize=True, deadline=None, max_examples=60, suppress_health_check=[HealthCheck.too_slow]
)
settings.load_profile("ci")


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
    yield


def _pattern(c: int, rng, size: int):
    "A learnable picture of class c: a bright block whose position encodes the class, plus noise."
    import numpy as np

    img = rng.integers(0, 60, size=(size, size, 3), dtype=np.uint8)
    r, col = divmod(c, 2)
    h = size // 2
    img[r * h // 2 : r * h // 2 + h, col * h : col * h + h] = 220
    return img


def make_image_folder(root, classes=("cat", "dog", "owl"), per_class=16, held_out=6, size=8, split=True,
                      corrupt=0, seed=0):
    """Write a tiny image-folder dataset: train/ and valid/ class folders (or one tree), PNG files.

    `corrupt` files with an image extension but garbage bytes are added to the first training class.
    """
    from pathlib import Path

    import numpy as np
    from PIL import Image

    root = Path(root)
    rng = np.random.default_rng(seed)
    for c, name in enumerate(classes):
        for split_name, n in (("train", per_class), ("valid", held_out)):
            d = root / split_name / name if split else root / name
            d.mkdir(parents=True, exist_ok=True)
            for i in range(n):
                Image.fromarray(_pattern(c, rng, size)).save(d / f"{split_name}_{i:03d}.png")
    first = root / "train" / classes[0] if split else root / classes[0]
    for i in range(corrupt):
        (first / f"broken_{i}.png").write_bytes(b"this is not a png" * (i + 1))
    return root


@pytest.fixture
def image_folder(tmp_path):
    return make_image_folder(tmp_path / "imgs")


def make_digits_folder(root, per_class=100, held_out=20):
    """sklearn's digits as an image folder (train/ and valid/ class folders of 8x8 PNGs): a folder whose labels a
    few epochs learn, for the tests that need a run that learned (a correction, a label-issue ranking)."""
    from pathlib import Path

    import numpy as np
    from PIL import Image
    from sklearn.datasets import load_digits

    root = Path(root)
    d = load_digits()
    for c in range(10):
        rows = np.flatnonzero(d.target == c)[: per_class + held_out]
        for k, i in enumerate(rows):
            split = "train" if k < per_class else "valid"
            (root / split / str(c)).mkdir(parents=True, exist_ok=True)
            Image.fromarray((d.images[i] * 255 / 16).astype(np.uint8)).save(root / split / str(c) / f"{i:04d}.png")
    return root
