"""Image files to pixels, the same way on every path (in memory, streamed, predicting): PIL's modes converted
faithfully (`to_mode`), one resize policy (`fit_square`), and unreadable files found and named, never a crash."""

from __future__ import annotations

from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

__all__ = ["IMAGE_EXTENSIONS", "to_mode", "open_image", "fit_square", "unreadable_reason", "decode_files",
           "decode_images", "array_hwc", "memory_image", "first_size", "find_unreadable", "walk_images"]

IMAGE_EXTENSIONS = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm", ".pgm"}

_ORIENTATION = 0x0112  # the EXIF tag of a photo's orientation
# PIL's modes of more than 8 bits per pixel: `convert` clips them to 255 instead of scaling
_WIDE_MODES = ("I;16", "I;16B", "I;16L", "I;16N", "I")


def to_mode(im, mode: str):
    """A PIL image in `mode` ("L" or "RGB"), every mode PIL reads decoded faithfully: 16-bit and 32-bit integer
    images scaled from 0-65535 to 0-255, alpha (LA, RGBA, PA, a palette's transparency) dropped as PIL's
    `convert` drops it, palette and CMYK images converted. A float image ("F") has no agreed range: refused."""
    from PIL import Image

    if im.mode == "F":
        raise ValueError("32-bit float images have no agreed pixel range; convert them to 8 or 16 bits")
    if im.mode in _WIDE_MODES:
        a = np.asarray(im).astype(np.float64) / 257.0
        im = Image.fromarray(np.clip(np.rint(a), 0, 255).astype(np.uint8), "L")
    elif im.mode == "P" and "transparency" in im.info:
        im = im.convert("RGBA")  # PIL warns when a palette with transparency goes straight to RGB
    return im if im.mode == mode else im.convert(mode)


def open_image(
    path: Path | str,  # an image file
    mode: str,  # "L" or "RGB" (`to_mode`)
    size: int | None = None,  # the side it will be fitted to (`fit_square`); None: decoded at full size
):
    """A file's pixels in `mode`, upright, read before the file closes. A JPEG is decoded at the smallest of libjpeg's
    DCT scales (1/2, 1/4, 1/8: PIL's draft mode) at which both its sides still cover `size`, several times faster than
    in full on photos much larger than the training size; the resize that follows (`fit_square`) does the rest, as
    it would from the full image (BENCHMARKS.md, "Reduced-size decoding", has the speed and the pixels' agreement).
    The EXIF orientation of a photo taken sideways is applied, as a viewer shows it."""
    from PIL import Image, ImageOps

    with Image.open(path) as im:
        if size is not None and im.format == "JPEG" and min(im.size) >= 2 * size:  # else full size: nothing to ask
            im.draft(im.mode, (size, size))  # the scale only: the mode stays the file's (CMYK, L, RGB)
        # a photo's EXIF block (TIFF keeps the tag among its own): parsed only where there is one
        if ("exif" in im.info or im.format == "TIFF") and im.getexif().get(_ORIENTATION, 1) != 1:
            im = ImageOps.exif_transpose(im)
        im = to_mode(im, mode)
        im.load()
    return im


def fit_square(
    im,  # a PIL image
    size: int,  # the side of the result
):
    """The resize policy of every path, in memory or streamed, training or predicting: the short side scaled to
    `size` (bilinear), then the centre square; a square image is only resized. Training crops and flips come after."""
    from PIL import Image, ImageOps

    if im.size == (size, size):
        return im
    return ImageOps.fit(im, (size, size), Image.BILINEAR)


def unreadable_reason(e: BaseException) -> str:
    "Why a file could not be decoded, in one short line: what skipped.txt and the warnings show."
    return f"{type(e).__name__}: {' '.join(str(e).split())[:120]}"


def decode_files(paths: Sequence[Path], img_size: int, channels: int) -> tuple[list[np.ndarray | None], list[str]]:
    "Decode and resize (`fit_square`) image files in threads; a file that fails gives None and its reason."

    mode = "L" if channels == 1 else "RGB"

    def one(p: Path):
        try:
            a = np.asarray(fit_square(open_image(p, mode, img_size), img_size), dtype=np.uint8)
            return (a[None] if a.ndim == 2 else a.transpose(2, 0, 1)), ""
        except Exception as e:  # noqa: BLE001 - corrupt files are skipped and reported, never a crash
            return None, unreadable_reason(e)

    with ThreadPoolExecutor(max_workers=8) as pool:
        results = list(pool.map(one, paths))
    return [r[0] for r in results], [r[1] for r in results]


def array_hwc(
    a: np.ndarray,  # (H, W), (H, W, C) or (C, H, W) uint8, C 1, 3 or 4
) -> np.ndarray:  # (H, W) or (H, W, C), contiguous: what PIL's `fromarray` takes
    "An array image in PIL's layout: channels last (moved there from first where only the first axis can be C)."
    if a.dtype != np.uint8:
        raise ValueError(f"an array image must be uint8 (0-255), got {a.dtype}")
    if a.ndim == 3 and a.shape[-1] not in (1, 3, 4):
        if a.shape[0] not in (1, 3, 4):
            raise ValueError(f"an array image must be HxW, HxWxC or CxHxW with C 1, 3 or 4, got {a.shape}")
        a = a.transpose(1, 2, 0)  # CxHxW, as torch and fastgr's own batches hold images
    elif a.ndim not in (2, 3):
        raise ValueError(f"an array image must be HxW, HxWxC or CxHxW, got {a.shape}")
    return np.ascontiguousarray(a[..., 0] if a.ndim == 3 and a.shape[-1] == 1 else a)


def memory_image(
    it,  # a CxHxW (or HxW) uint8 tensor, an array image (`array_hwc`), or a PIL image
):
    "An image held in memory as a PIL image: what `learn.predict` may be given besides a file, on either data path."
    from PIL import Image

    if isinstance(it, Image.Image):
        return it
    if isinstance(it, Tensor):  # CxHxW, as torch holds images
        it = it.detach().cpu().numpy()
        it = it.transpose(1, 2, 0) if it.ndim == 3 else it
    return Image.fromarray(array_hwc(it))


def decode_images(
    items: Sequence,  # paths, PIL images, HxW[xC] or CxHxW uint8 arrays, or CxHxW uint8 tensors
    size: tuple[int, int],  # (height, width) to resize to
    channels: int,  # 1 (grayscale) or 3 (RGB)
) -> Tensor:  # (N, channels, height, width) uint8
    "New images as a model trained on `fastgr.data` sees them: decoded, converted and resized like its data."
    from PIL import Image

    mode = "L" if channels == 1 else "RGB"
    out = []
    for it in items:
        im = to_mode(memory_image(it) if isinstance(it, (Tensor, np.ndarray, Image.Image)) else
                     open_image(it, mode, max(size)), mode)
        if size[0] == size[1]:
            im = fit_square(im, size[0])
        elif im.size != (size[1], size[0]):
            im = im.resize((size[1], size[0]), Image.BILINEAR)
        a = np.asarray(im, dtype=np.uint8)
        out.append(a[None] if a.ndim == 2 else a.transpose(2, 0, 1))
    return torch.from_numpy(np.stack(out)) if out else torch.zeros(0, channels, *size, dtype=torch.uint8)


def walk_images(
    root: Path,  # a folder
) -> tuple[list[Path], list[Path]]:  # image files below it, sorted; links to nothing that look like images
    """Every image file below `root`, following symbolic links to folders and files (Python's `rglob` before 3.13
    does not descend into a linked folder: a class folder that is a link would vanish) without going round a loop
    of links; and the image links that lead nowhere, which a caller counts as skipped."""
    import os

    found, broken, seen = [], [], set()
    for top, dirs, files in os.walk(root, followlinks=True):
        real = os.path.realpath(top)
        if real in seen:  # a link back to a folder already walked
            dirs[:] = []
            continue
        seen.add(real)
        dirs.sort()
        for name in files:
            p = Path(top) / name
            if p.suffix.lower() in IMAGE_EXTENSIONS:
                (found if p.is_file() else broken).append(p)
    return sorted(found), sorted(broken)


def first_size(paths: Sequence[Path]) -> tuple[int, int]:
    """(side, channels) to decode to: the first readable image's longer side (at most 224); grayscale only where
    every readable image is, RGB as soon as one is in colour (one grayscale file sorted first must not turn a colour
    set grey). Only the files' headers are read, in threads."""
    from PIL import Image

    def mode(p: Path) -> tuple[tuple[int, int], str] | None:
        try:
            with Image.open(p) as im:
                return im.size, im.mode
        except Exception:  # noqa: BLE001 - an unreadable file is found and named later
            return None

    with ThreadPoolExecutor(max_workers=8) as pool:
        heads = [h for h in pool.map(mode, paths) if h is not None]
    if not heads:
        return 32, 3
    gray = all(m in ("L", "1", "LA", *_WIDE_MODES) for _, m in heads)
    return min(max(heads[0][0]), 224), (1 if gray else 3)


def find_unreadable(paths: Sequence[Path], channels: int) -> list[str]:
    """Why each file cannot be decoded ("" where it can), found in threads without keeping any pixels: a JPEG is
    decoded at 1/8 of its size (PIL's draft mode, as fastai's `verify_images` does), anything else in full."""
    from PIL import Image

    mode = "L" if channels == 1 else "RGB"

    def one(p: Path) -> str:
        try:
            with Image.open(p) as im:
                im.draft(im.mode, (max(1, im.size[0] // 8), max(1, im.size[1] // 8)))
                to_mode(im, mode).load()
            return ""
        except Exception as e:  # noqa: BLE001 - corrupt files are skipped and reported, never a crash
            return unreadable_reason(e)

    with ThreadPoolExecutor(max_workers=8) as pool:
        return list(pool.map(one, paths))
