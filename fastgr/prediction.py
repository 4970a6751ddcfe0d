"""Predictions of a run's exported learner (`learner.pkl`): class probabilities of decoded data, and the top-k
classes of new image files, which is what `fastgr predict` prints.

The learner is loaded on the device asked for (a model trained on a GPU predicts on a CPU); new images are decoded,
converted and resized as the run's own data was, in chunks, so a folder of any size streams through.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterable
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from .data import ImageData
from .images import IMAGE_EXTENSIONS, decode_files, find_unreadable, walk_images
from .loader import ImageTensors, TensorDL

__all__ = ["load_run_learner", "predict_with_learner", "predict_images", "image_files"]

CHUNK = 1024  # images decoded and predicted at a time: memory stays flat for a folder of any size


def load_run_learner(
    path: str | Path,  # a run folder or its `learner.pkl`
    device: str | torch.device = "cpu",  # where to predict
):
    "A run's exported learner on `device`; a file that is not one is named in a one-line error."
    from fastai.learner import load_learner

    path = Path(path)
    if path.is_dir():
        path = path / "learner.pkl"
    if not path.is_file():
        raise FileNotFoundError(2, "no exported learner (a finished `fastgr train` run folder holds learner.pkl)",
                                str(path))
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            learn = load_learner(path, cpu=torch.device(device).type == "cpu")
    except Exception as e:  # noqa: BLE001 - any unreadable file means the same fix
        raise ValueError(f"{path} is not a readable exported learner ({type(e).__name__}); train the run again "
                         "with --overwrite") from None
    from .stream import StreamDL

    if not isinstance(learn.dls.train, (TensorDL, StreamDL)):
        raise ValueError(f"{path} was not exported by fastgr train")
    learn.model.to(device)
    return learn


def _probs(learn, x: torch.Tensor | list[Path], device) -> torch.Tensor:
    """(N, C) float32 probabilities of (N, C, H, W) uint8 images (a learner of in-memory data) or of image files
    (one of streamed data), without augmentation."""
    template = learn.dls.train
    if isinstance(x, torch.Tensor):
        x = ImageTensors(x, torch.zeros(len(x), dtype=torch.long))
    from .stream import StreamDL, default_workers

    # streamed files are decoded with this machine's workers, not those of the one that trained
    workers = dict(num_workers=default_workers(device)) if isinstance(template, StreamDL) else {}
    dl = template.new(x, shuffle=False, drop_last=False, augment="none", bs=max(template.bs, 256), device=device,
                      **workers)
    with learn.no_bar(), learn.no_logging():
        probs, _ = learn.get_preds(dl=dl)
    return probs.float()


def predict_with_learner(
    path: str | Path,  # an exported learner (`learner.pkl` of a run folder)
    data: ImageData,  # data of the kind it was trained on
    device: str | torch.device = "cpu",  # where to predict
    x: torch.Tensor | None = None,  # (N, C, H, W) uint8 images; the training images of `data` if None
) -> torch.Tensor:  # (N, C) float32 class probabilities
    "Class probabilities from a run's exported learner, without augmentation."
    learn = load_run_learner(path, device)
    expected = _channels(learn)
    if data.channels != expected:
        raise ValueError(f"the data has {data.channels} channel(s); the model expects {expected}")
    if x is None and not data.in_memory:
        return _probs(learn, list(data.train_paths), device)
    return _probs(learn, data.train_x if x is None else x, device)


def _channels(learn) -> int:
    dl = learn.dls.train
    return int(dl.x.shape[1]) if isinstance(dl, TensorDL) else int(dl.channels)


def _side(learn) -> int:
    dl = learn.dls.train
    return int(dl.x.shape[-1]) if isinstance(dl, TensorDL) else int(dl.size)


def image_files(
    items: Iterable[str | Path],  # image files and folders (searched recursively)
) -> list[Path]:
    "Every image named, folders expanded to the image files below them (sorted); a missing path is an error."
    out: list[Path] = []
    for item in items:
        p = Path(item)
        if p.is_dir():
            found, broken = walk_images(p)  # linked folders followed, as training's listing does
            out.extend(sorted(found + broken))  # a link to nothing is listed: it is skipped as unreadable, and said
        elif p.is_file():
            out.append(p)
        else:
            raise FileNotFoundError(2, "no such image file or folder", str(p))
    return out


def predict_images(
    run: str | Path,  # a finished `fastgr train` run folder (or its learner.pkl)
    items: Iterable[str | Path],  # image files and folders of images
    k: int = 3,  # classes per image, most probable first
    device: str | torch.device | None = None,  # where to predict; CUDA when available if None
) -> pd.DataFrame:
    """The top-`k` classes of new images: one row per readable image with `item`, `class_1`, `prob_1`, ...,
    `class_k`, `prob_k`. Unreadable files are left out and listed, with the reason, in `attrs["skipped"]`."""
    from .config import resolve_device

    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    device = resolve_device(None if device is None else str(device))
    paths = image_files(items)
    if not paths:
        raise ValueError("no image files found (" + ", ".join(sorted(IMAGE_EXTENSIONS)) + ")")
    learn = load_run_learner(run, device)
    vocab = list(learn.dls.vocab)
    k = min(k, len(vocab))
    c, side = _channels(learn), _side(learn)
    streamed = not isinstance(learn.dls.train, TensorDL)
    frames, skipped = [], []
    for start in range(0, len(paths), CHUNK):
        chunk = paths[start : start + CHUNK]
        if streamed:  # the learner's own loader opens the files; unreadable ones are found first
            reasons = find_unreadable(chunk, c)
            kept = [i for i, r in enumerate(reasons) if not r]
            x = [chunk[i] for i in kept]
        else:  # decoded (in threads) as the run's own in-memory data was
            arrays, reasons = decode_files(chunk, side, c)
            kept = [i for i, r in enumerate(reasons) if not r]
            x = torch.from_numpy(np.stack([arrays[i] for i in kept])) if kept else None
        skipped.extend((str(chunk[i]), r) for i, r in enumerate(reasons) if r)
        if not kept:
            continue
        top_p, top_i = _probs(learn, x, device).topk(k, dim=1)
        cols: dict[str, object] = {"item": [str(chunk[i]) for i in kept]}
        for j in range(k):
            cols[f"class_{j + 1}"] = [vocab[int(i)] for i in top_i[:, j]]
            cols[f"prob_{j + 1}"] = top_p[:, j].numpy().astype(np.float64)
        frames.append(pd.DataFrame(cols))
    if not frames:  # nothing predicted is not a result
        raise ValueError(f"none of the {len(paths)} image file(s) could be read, e.g. {skipped[0][0]} "
                         f"({skipped[0][1]})")
    out = pd.concat(frames, ignore_index=True)
    out.attrs["skipped"] = skipped
    return out
