r"""Reduced-size JPEG decoding (`fastgr.images.open_image`): photos of 6 and 12 megapixels loaded for training at
128 and 224 px, against the same loader decoding in full (before the change), fastai's stock pipeline and a plain
torch loader.

    uv run python bench/jpeg_decoding.py [--n 1000] [--work /tmp/jpeg_bench]

Folder: N JPEGs at quality 90, half 3000x2000 and half 4000x3000 px, of photographic content (CIFAR-10 images from
.data/ft59 upscaled bicubic, with a brightness gradient and sensor noise; random smooth pictures where that folder is
missing), 2 classes, a tenth held out (`valid/`). On it, for each image size:

- loaders, one pass over the training files each (batch 64, W decoding processes: `StreamDL`'s default on a CPU,
  `default_workers`, 1 on 2 cores;
  images per second): (a) fastgr's `StreamDL` (crop+flip, presizing at 1.25 x the size); (b) the same decoding every
  file in full, as before the change; (c) fastai's stock pipeline, `ImageDataLoaders.from_folder(path,
  item_tfms=Resize(size), bs=64, num_workers=W)`; (d) a plain torch `DataLoader` over PIL's full decode + a resize
  of the short side and a centre crop (torchvision), the same workers;
- the same loaders at 224 px on the folder's 3000x2000 files alone (`--only-subset`, merged into the results);
- decoding alone, one process: milliseconds per file of open + decode + `fit_square` to the presized side, full
  and reduced, for each file size;
- what it costs where there is nothing to scale (`--only-small`): a 128-px JPEG fitted to 160 px, before and after;
- the pixels: PSNR of the reduced decode's `fit_square` against the full decode's, over 100 files;
- one training epoch of `fastgr train --in-memory no --img-size S` (CIFAR ResNet-20), decoding reduced and in full;
- the same accuracy: CIFAR-5k (bench/budget_sweep.py's folder) upscaled to 256-px JPEGs, trained streamed at 32 px
  for `--cifar-epochs` (cross-entropy, clean labels, seed 0), decoding reduced and in full.

Results: bench/results/jpeg_decoding.json. Run it alone: every figure is a wall-clock time on this machine.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from fastgr.files import write_text

OUT = Path("bench/results/jpeg_decoding.json")
SIZES = ((3000, 2000), (4000, 3000))


def make_folder(root: Path, n: int, source: Path = Path(".data/ft59/train")) -> Path:
    "N photo-like JPEGs, half of each size in `SIZES`, 2 classes, every tenth in valid/."
    from PIL import Image

    if (root / "done").exists():
        return root
    rng = np.random.default_rng(0)
    bases = sorted(source.rglob("*.jpg"))[:n] if source.is_dir() else []
    noise = rng.normal(0, 6, (512, 512, 3)).astype(np.int16)  # sensor noise, tiled
    for i in range(n):
        w, h = SIZES[i % 2]
        base = Image.open(bases[i]).convert("RGB") if i < len(bases) else \
            Image.fromarray(rng.integers(0, 255, (8, 12, 3), dtype=np.uint8))
        a = np.asarray(base.resize((w, h), Image.BICUBIC), np.int16)
        a = a + np.linspace(-20, 20, w, dtype=np.float32).astype(np.int16)[None, :, None]
        a = a + np.tile(noise, (h // 512 + 1, w // 512 + 1, 1))[:h, :w]
        d = root / ("valid" if i % 10 == 0 else "train") / f"c{i % 4 // 2}"  # both sizes in both classes
        d.mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.clip(a, 0, 255).astype(np.uint8)).save(d / f"{i:05d}.jpg", quality=90)
    (root / "done").write_text("")
    return root


@contextlib.contextmanager
def full_decoding():
    "fastgr's decoding as before the change: every file decoded at full size (forked workers inherit it)."
    import fastgr.images as images

    reduced = images.open_image
    images.open_image = lambda path, mode, size=None: reduced(path, mode, None)
    try:
        yield
    finally:
        images.open_image = reduced


def one_pass(dl) -> float:
    "Images per second of one pass over a loader."
    t, seen = time.perf_counter(), 0
    for x, *_ in dl:
        seen += len(x)
    return seen / (time.perf_counter() - t)


def loaders(root: Path, size: int, workers: int) -> dict:
    import torch
    from fastai.vision.all import ImageDataLoaders, Resize
    from PIL import Image
    from torchvision import transforms

    from fastgr.data import load_data
    from fastgr.dataloaders import make_dataloaders

    data = load_data(root, img_size=size, in_memory="no")
    stats = ((0.5,) * 3, (0.25,) * 3)
    res = {}
    for name, ctx in (("fastgr_streamed", contextlib.nullcontext()), ("fastgr_streamed_full_decode", full_decoding())):
        with ctx:  # a loader of its own: its workers start (fork) at its first pass, inside the context
            dl = make_dataloaders(data, bs=64, augment="crop+flip", stats=stats).train
            assert dl.fake_l.num_workers == workers, dl.fake_l.num_workers
            res[name] = one_pass(dl)
            del dl
    fastai = ImageDataLoaders.from_folder(root, item_tfms=Resize(size), bs=64, num_workers=workers, device="cpu")
    res["fastai_stock"] = one_pass(fastai.train)
    tfm = transforms.Compose([transforms.Resize(size), transforms.CenterCrop(size), transforms.PILToTensor()])
    files = sorted((root / "train").rglob("*.jpg"))

    class Files(torch.utils.data.Dataset):
        def __len__(self):
            return len(files)

        def __getitem__(self, i):
            with Image.open(files[i]) as im:
                return tfm(im.convert("RGB")), 0

    res["torch_pil"] = one_pass(torch.utils.data.DataLoader(Files(), batch_size=64, shuffle=True,
                                                            num_workers=workers))
    res["n_train"], res["workers"] = len(files), workers
    return res


def decode_cost(root: Path, size: int, k: int = 20) -> dict:
    "Milliseconds per file, one process: open, decode, `fit_square` to the presized side; full and reduced."
    from fastgr.images import fit_square, open_image
    from fastgr.stream import PRESIZE

    side = round(size * PRESIZE)
    files = sorted((root / "train").rglob("*.jpg"))
    out = {}
    for w, h in SIZES:
        pick = [f for f in files if SIZES[int(f.stem) % 2] == (w, h)][:k]  # file i has size SIZES[i % 2]
        for name, s in (("full", None), ("reduced", side)):
            t = time.perf_counter()
            for f in pick:
                fit_square(open_image(f, "RGB", s), side)
            out[f"{w}x{h}_{name}_ms"] = (time.perf_counter() - t) / len(pick) * 1e3
    return out


def pixels(root: Path, size: int, k: int = 100) -> dict:
    "PSNR of the reduced decode's `fit_square` against the full decode's, over k files."
    from fastgr.images import fit_square, open_image

    vals = []
    for f in sorted((root / "train").rglob("*.jpg"))[:k]:
        a = np.asarray(fit_square(open_image(f, "RGB", size), size), np.float64)
        b = np.asarray(fit_square(open_image(f, "RGB"), size), np.float64)
        vals.append(10 * np.log10(255**2 / max(((a - b) ** 2).mean(), 1e-12)))
    return {"psnr_db_min": float(np.min(vals)), "psnr_db_mean": float(np.mean(vals)), "files": len(vals)}


def train_epoch(root: Path, size: int) -> dict:
    "One epoch of `fastgr train --in-memory no`, decoding reduced and in full: wall seconds of the training."
    from fastgr import RunFolder, TrainConfig, train_run

    out = {}
    for name, ctx in (("reduced", contextlib.nullcontext()), ("full_decode", full_decoding())):
        with ctx, tempfile.TemporaryDirectory() as d:
            cfg = TrainConfig(data=str(root), in_memory="no", img_size=size, epochs=1, bs=64, loss="ce")
            t = time.perf_counter()
            train_run(cfg, Path(d) / "run")
            out[f"{name}_wall_s"] = time.perf_counter() - t
            out[f"{name}_training_s"] = RunFolder(Path(d) / "run").training_seconds()
    return out


def small_files(work: Path, k: int = 2000) -> dict:
    """What the change costs where there is nothing to scale: a 128-px JPEG opened and fitted to 160 px (presizing
    for 128), microseconds a file over `k` calls, by the code before the change and by `open_image`, in turn."""
    from PIL import Image

    from fastgr.images import fit_square, open_image, to_mode

    path = work / "small.jpg"
    rng = np.random.default_rng(0)
    Image.fromarray((rng.random((128, 128, 3)) * 255).astype(np.uint8)).save(path, quality=90)

    def before():
        with Image.open(path) as im:
            im = to_mode(im, "RGB")
            im.load()
        return fit_square(im, 160)

    def after():
        return fit_square(open_image(path, "RGB", 160), 160)

    out = {"before_us": [], "after_us": []}
    for _ in range(3):
        for name, f in (("before_us", before), ("after_us", after)):
            t = time.perf_counter()
            for _ in range(k):
                f()
            out[name].append((time.perf_counter() - t) / k * 1e6)
    return out


def upscaled_cifar(root: Path, source: Path, side: int = 256) -> Path:
    "CIFAR-5k (`source`: train/ and test/ class folders of 32-px files) upscaled bicubic to `side` px, quality 90."
    from PIL import Image

    if (root / "done").exists():
        return root
    for f in sorted(source.rglob("*.jpg")):
        d = root / f.parent.relative_to(source)
        d.mkdir(parents=True, exist_ok=True)
        Image.open(f).convert("RGB").resize((side, side), Image.BICUBIC).save(d / f.name, quality=90)
    (root / "done").write_text("")
    return root


def cifar_accuracy(root: Path, epochs: int) -> dict:
    """CIFAR-5k through upscaled files, streamed at 32 px (`fastgr train --in-memory no --img-size 32`, clean labels,
    cross-entropy, seed 0), decoding reduced and in full: final test accuracy and training seconds of each."""
    from fastgr import RunFolder, TrainConfig, train_run

    out = {"epochs": epochs}
    for name, ctx in (("reduced", contextlib.nullcontext()), ("full_decode", full_decoding())):
        with ctx, tempfile.TemporaryDirectory() as d:
            cfg = TrainConfig(data=str(root), in_memory="no", img_size=32, epochs=epochs, loss="ce", noise=0.0)
            s = train_run(cfg, Path(d) / "run")
            out[f"{name}_test_accuracy"] = s["test_accuracy_final"]
            out[f"{name}_training_s"] = RunFolder(Path(d) / "run").training_seconds()
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=1000, help="JPEGs in the folder")
    ap.add_argument("--sizes", type=int, nargs="+", default=[128, 224], help="training image sides")
    ap.add_argument("--work", type=Path, default=Path("/tmp/jpeg_bench"))
    ap.add_argument("--train-size", type=int, default=128, help="the image side of the training epochs")
    ap.add_argument("--cifar", type=Path, default=Path(".data/cifar5k"),
                    help="CIFAR-5k's folder (bench/budget_sweep.py)")
    ap.add_argument("--cifar-epochs", type=int, default=10, help="epochs of the CIFAR-5k accuracy check; 0: none")
    ap.add_argument("--only-cifar", action="store_true", help="the CIFAR-5k check alone, other results kept")
    ap.add_argument("--only-small", action="store_true", help="the cost on a 128-px file alone, other results kept")
    ap.add_argument("--only-subset", action="store_true", help="the loaders at 224 px on the folder's 3000x2000 "
                    "files alone (linked), other results kept")
    a = ap.parse_args()
    from fastgr.config import versions
    from fastgr.stream import default_workers

    if a.only_small:
        result = json.loads(OUT.read_text())
        result["small_files"] = {"command": " ".join(sys.argv), **small_files(a.work)}
        print(result["small_files"], flush=True)
        write_text(OUT, json.dumps(result, indent=1) + "\n")
        return
    if a.only_subset:  # the loaders on the 3000x2000 files alone (the target), linked from the folder
        result = json.loads(OUT.read_text())
        full = a.work / f"photos_{a.n}"
        sub = a.work / f"photos_{a.n}_3000x2000"
        for f in sorted(full.rglob("*.jpg")):
            if SIZES[int(f.stem) % 2] == SIZES[0] and not (sub / f.relative_to(full)).exists():
                (sub / f.relative_to(full)).parent.mkdir(parents=True, exist_ok=True)
                (sub / f.relative_to(full)).symlink_to(f)
        result["img_size_224"]["loaders_3000x2000_only"] = {"command": " ".join(sys.argv),
                                                           **loaders(sub, 224, default_workers("cpu"))}
        print(result["img_size_224"]["loaders_3000x2000_only"], flush=True)
        write_text(OUT, json.dumps(result, indent=1) + "\n")
        return
    if a.only_cifar:
        result = json.loads(OUT.read_text())
        up = upscaled_cifar(a.work / "cifar5k_256", a.cifar)
        result["cifar5k_upscaled"] = {"command": " ".join(sys.argv), "side": 256, **cifar_accuracy(up, a.cifar_epochs)}
        write_text(OUT, json.dumps(result, indent=1) + "\n")
        return
    t = time.perf_counter()
    root = make_folder(a.work / f"photos_{a.n}", a.n)
    result = {"meta": {"versions": versions(), "command": " ".join(sys.argv), "n_files": a.n,
                       "file_sizes": [f"{w}x{h}" for w, h in SIZES], "quality": 90,
                       "folder_seconds": time.perf_counter() - t}}
    workers = default_workers("cpu")
    for size in a.sizes:
        r = {"decode": decode_cost(root, size), "pixels": pixels(root, size), "loaders": loaders(root, size, workers)}
        print(size, r, flush=True)
        result[f"img_size_{size}"] = r
    result["train_epoch"] = {"img_size": a.train_size, **train_epoch(root, a.train_size)}
    print(result["train_epoch"], flush=True)
    write_text(OUT, json.dumps(result, indent=1) + "\n")  # what is measured so far
    if a.cifar_epochs:
        up = upscaled_cifar(a.work / "cifar5k_256", a.cifar)
        result["cifar5k_upscaled"] = {"side": 256, **cifar_accuracy(up, a.cifar_epochs)}
        print(result["cifar5k_upscaled"], flush=True)
        write_text(OUT, json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    main()
