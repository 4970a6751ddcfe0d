"""Streamed data (`fastgr.stream.StreamDL`): files decoded by workers as fastai's pipeline does, the same pixels
as the in-memory path, corrupt files skipped, resume, prediction, and memory that does not grow with the data."""

import json
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
import torch

from fastgr import Reporter, TrainConfig, train_run
from fastgr.data import load_data
from tests.conftest import make_image_folder
from tests.test_experiment import StopAfter, model_state, strip_seconds


def mixed_folder(root, n=12, seed=0):
    "Photos of mixed sizes and aspect ratios, 3 classes, a bright block marking the class."
    from PIL import Image

    rng = np.random.default_rng(seed)
    for split, count in (("train", n), ("valid", 4)):
        for c, name in enumerate(("cat", "dog", "owl")):
            d = root / split / name
            d.mkdir(parents=True, exist_ok=True)
            for i in range(count):
                w, h = int(rng.integers(20, 48)), int(rng.integers(20, 48))
                img = rng.integers(0, 60, size=(h, w, 3), dtype=np.uint8)
                img[: h // 2, c * w // 3 : (c + 1) * w // 3] = 220
                Image.fromarray(img).save(d / f"{i:03d}.{'jpg' if i % 2 else 'png'}")
    return root


def test_streamed_batches_hold_the_in_memory_pixels(tmp_path):
    from fastgr.dataloaders import make_dataloaders

    root = mixed_folder(tmp_path / "photos")
    mem, disk = load_data(root, img_size=24, in_memory="yes"), load_data(root, img_size=24, in_memory="no")
    assert mem.in_memory and not disk.in_memory
    assert disk.train_x is None and len(disk.train_paths) == 36 and disk.img_size == 24 and disk.channels == 3
    assert mem.train_items == disk.train_items and torch.equal(mem.train_y, disk.train_y)
    stats = mem.channel_stats()
    a = make_dataloaders(mem, stats=stats)
    b = make_dataloaders(disk, stats=stats)
    xa, ya = a.valid.one_batch()
    xb, yb = b.valid.new(num_workers=0).one_batch()
    assert xb.shape == (12, 3, 24, 24) and torch.equal(ya.cpu(), yb.cpu())
    # one resize policy in both paths: the short side to 24, the centre square (not squashed)
    torch.testing.assert_close(xa, xb, atol=1e-5, rtol=0)
    # training batches: random resized crops and flips of the same images, normalised like the rest
    xt, _ = b.train.new(num_workers=0).one_batch()
    assert xt.shape == (36, 3, 24, 24) and abs(xt.mean().item()) < 1.0
    # channels-last on request, as the in-memory loader gives a GPU: the same values, the other strides
    c = make_dataloaders(disk, stats=stats, channels_last=True).valid.new(num_workers=0)
    xc, _ = c.one_batch()
    assert c.channels_last and xc.is_contiguous(memory_format=torch.channels_last) and not xb.is_contiguous(
        memory_format=torch.channels_last)
    torch.testing.assert_close(xc, xb, atol=0, rtol=0)


def test_auto_streams_what_does_not_fit_and_skips_corrupt_files(tmp_path, monkeypatch):
    import fastgr.data

    root = make_image_folder(tmp_path / "imgs", size=16, corrupt=2)
    assert load_data(root).in_memory
    monkeypatch.setattr(fastgr.data, "MEMORY_BUDGET", 1000)  # bytes: these 66 images take 50,688
    streamed = load_data(root)
    assert not streamed.in_memory
    assert load_data(root, in_memory="yes").in_memory
    # corrupt files are skipped and named in both paths, with the same reasons
    assert [p for p, _ in streamed.skipped] == [p for p, _ in load_data(root, in_memory="yes").skipped]
    assert len(streamed.skipped) == 2 and len(streamed.train_paths) == 48
    with pytest.raises(ValueError, match="unknown in_memory"):
        load_data(root, in_memory="maybe")


def test_streamed_run_resumes_to_the_same_files_and_predicts(tmp_path):
    from fastgr import predict_images

    root = make_image_folder(tmp_path / "imgs", size=16, per_class=16, held_out=6, corrupt=1)
    cfg = dict(data=str(root), in_memory="no", epochs=3, bs=16, noise=0.25)
    full = train_run(TrainConfig(**cfg), tmp_path / "full")
    assert full["skipped_files"] == 1
    facts = json.loads((tmp_path / "full" / "config.json").read_text())
    assert facts["config"]["in_memory"] == "no" and facts["data"]["n_train"] == 48
    with pytest.raises(KeyboardInterrupt):
        train_run(TrainConfig(**cfg), tmp_path / "cut", reporter=StopAfter(2))
    resumed = train_run(TrainConfig(), tmp_path / "cut", resume=True, reporter=Reporter())
    assert {k: v for k, v in resumed.items() if k != "seconds"} == {k: v for k, v in full.items() if k != "seconds"}
    pd.testing.assert_frame_equal(strip_seconds(pd.read_csv(tmp_path / "cut" / "metrics.csv")),
                                  strip_seconds(pd.read_csv(tmp_path / "full" / "metrics.csv")))
    a, b = model_state(tmp_path / "cut" / "learner.pkl"), model_state(tmp_path / "full" / "learner.pkl")
    assert all(torch.equal(a[k], b[k]) for k in a)
    # the exported learner of streamed data predicts new files as the run scored its held-out split
    table = predict_images(tmp_path / "full", [root / "valid"], k=1, device="cpu")
    acc = (table["class_1"] == table["item"].map(lambda p: p.split("/")[-2])).mean()
    assert acc == pytest.approx(full["test_accuracy_final"], abs=1e-6)
    # and relabels its streamed training files (`fastgr correct`): where the model disagrees with the given label
    from fastgr import correct_run

    report = correct_run(tmp_path / "full", force=True)  # 3 epochs of 48 pictures are at chance: relabel anyway
    assert report["relabelled_fraction"] == pytest.approx(1 - full["train_accuracy_given"], abs=1e-9)


RSS = """
import resource, sys
from fastgr import TrainConfig, train_run
train_run(TrainConfig(data=sys.argv[1], in_memory="no", epochs=1, bs=64, arch="cifar_resnet20", augment="none"),
          sys.argv[2])
print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
"""


def test_streamed_memory_does_not_grow_with_the_data(tmp_path):
    "A small version of bench/stream_data.py: peak RSS on 1,200 files within 1.2x of that on 120."
    from PIL import Image

    rng = np.random.default_rng(0)
    peaks = {}
    for n in (120, 1200):
        root = tmp_path / f"n{n}"
        for i in range(n):
            d = root / ("train" if i % 6 else "valid") / f"c{i % 3}"
            d.mkdir(parents=True, exist_ok=True)
            Image.fromarray(rng.integers(0, 255, (32, 32, 3), dtype=np.uint8)).save(d / f"{i}.jpg")
        r = subprocess.run([sys.executable, "-c", RSS, str(root), str(tmp_path / f"run{n}")], capture_output=True,
                           text=True, timeout=600)
        assert r.returncode == 0, r.stderr[-2000:]
        peaks[n] = int(r.stdout.split()[-1])
    assert peaks[1200] <= 1.2 * peaks[120], peaks


def test_streamed_cpu_training_trims_the_heap_after_every_training_step(tmp_path, monkeypatch):
    "gr_learner adds `TrimHostHeap` when it streams on the CPU (not in memory); it trims once per training step."
    from fastai.data.core import DataLoaders

    import fastgr.hostmem as stream
    from fastgr.dataloaders import make_dataloaders
    from fastgr.learner import gr_learner

    calls = []
    monkeypatch.setattr(stream, "malloc_trim", lambda: calls.append)
    root = mixed_folder(tmp_path / "photos")
    dls = make_dataloaders(load_data(root, img_size=16, in_memory="no"), bs=8)
    streamed = DataLoaders(dls.train.new(num_workers=0), dls.valid.new(num_workers=0))
    learn = gr_learner(streamed, "cifar_resnet20")
    with learn.no_bar(), learn.no_logging():
        learn.fit(2, 0.01)
    assert len(calls) == 2 * (36 // 8) and set(calls) == {0}  # training steps only (drop_last), not validation
    mem = make_dataloaders(load_data(root, img_size=16, in_memory="yes"), bs=8)
    assert not any(isinstance(cb, stream.TrimHostHeap) for cb in gr_learner(mem, "cifar_resnet20").cbs)


def test_new_keeps_the_workers_and_loader_options(tmp_path):
    "fastai holds the worker count in its `_FakeLoader` (`dl.num_workers` is always 1): a copy must keep the real one."
    from fastgr.stream import StreamDL

    root = mixed_folder(tmp_path / "photos", n=2)
    items = [(p, i % 3) for i, p in enumerate(sorted((root / "train").rglob("*.*")))]
    for workers in (0, 3):
        dl = StreamDL(items, ["cat", "dog", "owl"], 16, bs=2, num_workers=workers, timeout=7)
        for copy in (dl.new(), dl.new(augment="none"), dl.new(items[:2]), dl.new(shuffle=True)):
            assert copy.fake_l.num_workers == workers and copy.timeout == 7
    assert dl.new(num_workers=1).fake_l.num_workers == 1


def test_prediction_decodes_with_this_machines_workers_not_the_trainers(tmp_path, monkeypatch):
    "A learner exported where training had N decoding workers predicts with `default_workers` of where it runs."
    from fastai.data.core import DataLoaders

    import fastgr.stream as stream
    from fastgr.dataloaders import make_dataloaders
    from fastgr.learner import gr_learner
    from fastgr.prediction import _probs

    root = mixed_folder(tmp_path / "photos", n=3)
    data = load_data(root, img_size=16, in_memory="no")
    dls = make_dataloaders(data, bs=4)
    trained_with = DataLoaders(dls.train.new(num_workers=3), dls.valid.new(num_workers=0))  # e.g. a GPU machine's
    learn = gr_learner(trained_with, "cifar_resnet20", in_chans=3)
    monkeypatch.setattr(stream, "default_workers", lambda device: 0)  # this machine's count
    seen, get_preds = [], learn.get_preds

    def spy(dl=None, **kw):
        seen.append(dl.fake_l.num_workers)
        return get_preds(dl=dl, **kw)

    learn.get_preds = spy
    probs = _probs(learn, list(data.train_paths), "cpu")
    assert seen == [0]
    assert probs.shape == (len(data.train_paths), 3)
    torch.testing.assert_close(probs.sum(1), torch.ones(len(probs)))


def passes(dl, n):
    "`n` passes of `dl`: its batches on the CPU, one list per pass (seeded alike for the device's draws)."
    import random

    random.seed(0)
    torch.manual_seed(0)
    return [[(x.cpu().clone(), y.cpu().clone()) for x, y in dl] for _ in range(n)]


def test_workers_last_from_pass_to_pass_and_do_not_change_the_batches(tmp_path):
    """The decoding workers are started once and kept (fastai's iteration forks new ones every epoch); the workers'
    random squares are a function of (seed, epoch, batch), so 0, 1 or 2 workers give the same batches."""
    import random

    from fastgr.stream import StreamDL

    root = mixed_folder(tmp_path / "photos", n=6)
    items = [(p, i % 3) for i, p in enumerate(sorted((root / "train").rglob("*.*")))]
    dl = StreamDL(items, ["cat", "dog", "owl"], 16, bs=4, shuffle=True, drop_last=True, augment="crop+flip",
                  num_workers=2)
    runs = {0: passes(dl.new(num_workers=0), 3)}
    state = random.getstate()  # after the device's draws of three passes
    runs[2] = passes(dl, 1)
    pids = [[w.pid for w in dl._pool._iterator._workers]]
    for _ in range(2):
        runs[2] += [[(x.cpu().clone(), y.cpu().clone()) for x, y in dl]]
        pids.append([w.pid for w in dl._pool._iterator._workers])
    assert random.getstate() == state  # made here or in a worker, the items' draws leave the caller's generator be
    runs[1] = passes(dl.new(num_workers=1), 3)
    assert len(pids[0]) == 2 and pids[0] == pids[1] == pids[2]  # the same two processes every pass
    assert [len(p) for p in runs[0]] == [len(items) // 4] * 3  # drop_last: 18 files, 4 batches of 4
    for w in (1, 2):
        for a, b in zip(runs[0], runs[w]):
            for (xa, ya), (xb, yb) in zip(a, b):
                assert torch.equal(ya, yb) and torch.equal(xa, xb)
    # every pass a new order (the workers' copies follow the epoch through their jobs: the equalities above)
    assert not torch.equal(torch.cat([y for _, y in runs[0][0]]), torch.cat([y for _, y in runs[0][1]]))
    # fastai's own iteration (new workers every pass) keeps the order of (seed, epoch); only the squares' draws differ
    fastai_way = passes(dl.new(persistent_workers=False), 3)
    for a, b in zip(runs[0], fastai_way):
        assert torch.equal(torch.cat([y for _, y in a]), torch.cat([y for _, y in b]))
    # the pool does not travel with a copy of the loader (an export, a spawned worker)
    import pickle

    assert pickle.loads(pickle.dumps(dl))._pool is None and dl._pool is not None


KEPT = """
import sys
from pathlib import Path
from fastgr.stream import StreamDL
items = [(p, i % 3) for i, p in enumerate(sorted(Path(sys.argv[1]).rglob("*.*")))]
dl = StreamDL(items, ["cat", "dog", "owl"], 16, bs=4, shuffle=True, augment="crop", num_workers=2)
for _ in range(2):
    n = sum(len(y) for _, y in dl)
print(n)
"""


def test_a_process_with_kept_workers_exits(tmp_path):
    "Workers that outlive a pass must not hold the process open when it ends (they end with their loader)."
    root = mixed_folder(tmp_path / "photos", n=3)
    r = subprocess.run([sys.executable, "-c", KEPT, str(root / "train")], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr[-2000:]
    assert r.stdout.split()[-1] == "9"


def test_training_flips_each_image_or_leaves_it_pixel_for_pixel():
    "`FlipEach`: every training image is itself or its exact mirror, about half of them mirrored; held out: none."
    from fastai.torch_core import TensorImage

    from fastgr.augment import FlipEach

    torch.manual_seed(0)
    x = TensorImage(torch.rand(400, 3, 5, 7))
    out = FlipEach()(x, split_idx=0)
    same = (out == x).flatten(1).all(1)
    mirrored = (out == x.flip(-1)).flatten(1).all(1)
    assert isinstance(out, TensorImage) and bool((same ^ mirrored).all())  # one or the other, never both or neither
    assert 160 < int(mirrored.sum()) < 240  # 400 draws of 1/2: 200 +- 10
    assert torch.equal(FlipEach()(x, split_idx=1), x)
    # the mirror of fastai's own `Flip` (an affine warp: align_corners maps pixel centres onto pixel centres)
    from fastai.vision.augment import Flip

    torch.testing.assert_close(Flip(p=1.0, draw=1)(x[:8], split_idx=0), x[:8].flip(-1), atol=1e-5, rtol=0)
