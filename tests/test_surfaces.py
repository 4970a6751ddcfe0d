"""Nothing silently wrong on the newer surfaces: symlinked folders, fine-tuning weights, `fastgr issues`,
`fastgr predict`, resume and the CSVs. Each test fails on the fastgr before these fixes (docs/troubleshooting.md
lists the behaviours)."""

import os
import time

import numpy as np
import pandas as pd
import pytest
import torch
from fastgr.cli import app
from PIL import Image
from typer.testing import CliRunner

from fastgr import TrainConfig, load_data, train_run
from tests.conftest import make_image_folder
from tests.test_cli import error_line
from tests.test_experiment import StopAfter

runner = CliRunner()
TINY = ["--epochs", "1", "--img-size", "8", "--bs", "16"]


def write_csv(path, rows):
    pd.DataFrame(rows, columns=["path", "label"]).to_csv(path, index=False)
    return path


# -- 1. a class folder that is a symbolic link ----------------------------------------------------------

def test_a_class_folder_that_is_a_link_is_a_class_and_a_link_to_nothing_is_counted(tmp_path):
    from fastgr.prediction import image_files

    photos = make_image_folder(tmp_path / "photos", classes=("0", "1"), per_class=6, split=False)
    elsewhere = make_image_folder(tmp_path / "elsewhere", classes=("2",), per_class=6, split=False)
    os.symlink(elsewhere / "2", photos / "2")
    os.symlink(tmp_path / "gone.png", photos / "0" / "gone.png")  # a link to nothing
    os.symlink(photos, photos / "1" / "loop")  # a loop of links: walked once
    data = load_data(photos, img_size=8)
    assert data.classes == ["0", "1", "2"]
    assert len(data.train_y) + len(data.valid_y) == 36  # 12 images a class, the linked one included
    assert [r for p, r in data.skipped if p.endswith("gone.png")] == ["a symbolic link to nothing"]
    assert sum(p.parent.name == "2" for p in image_files([photos])) == 12  # predict sees the linked class too


# -- 2. --weights of another architecture --------------------------------------------------------------

def test_weights_of_another_architecture_are_refused_by_name(tmp_path):
    import timm

    from fastgr.finetune import create_finetune_model

    small = tmp_path / "resnet18.pth"
    torch.save(timm.create_model("resnet18").state_dict(), small)
    with pytest.raises(ValueError, match=r"does not fit resnet34: \d+ missing key\(s\), e.g. layer1\.2"):
        create_finetune_model("resnet34", 3, 3, small)  # its deeper blocks would stay random
    vit = tmp_path / "vit.pth"
    torch.save(timm.create_model("test_vit", num_classes=10).state_dict(), vit)
    with pytest.raises(ValueError, match=r"does not fit cifar_resnet20: \d+ missing key\(s\).*unexpected"):
        create_finetune_model("cifar_resnet20", 3, 3, vit)  # not one tensor in common
    create_finetune_model("resnet18", 3, 3, small)  # its own architecture still loads
    images = make_image_folder(tmp_path / "imgs")
    r = runner.invoke(app, ["train", str(images), "--arch", "resnet34", "--weights", str(small), *TINY,
                            "--out", str(tmp_path / "run")])
    assert "does not fit resnet34" in error_line(r) and not (tmp_path / "run").exists()


# -- 3. labels that look like numbers -------------------------------------------------------------------

def test_labels_that_look_like_numbers_stay_the_classes_they_are(tmp_path):
    from fastgr.issues import label_issues

    make_image_folder(tmp_path / "imgs", classes=("a", "b", "c", "d"), per_class=6, split=False)
    names = {"a": "01", "b": "1", "c": "1.0", "d": "NA"}
    rows = [(f"imgs/{c}/{p.name}", names[c]) for c in "abcd" for p in sorted((tmp_path / "imgs" / c).iterdir())]
    data = write_csv(tmp_path / "data.csv", rows)
    out = tmp_path / "run"
    train_run(TrainConfig(data=str(data), epochs=1, img_size=8, bs=8, loss="ce"), out)
    frame = label_issues(out)
    assert set(frame["given_label"]) == {"01", "1", "1.0", "NA"}
    assert set(frame["suggested_label"]) <= {"01", "1", "1.0", "NA"}
    r = runner.invoke(app, ["issues", str(out), "--top", "24", "--no-sheet", "--force"])
    assert r.exit_code == 0 and " 1.0 " in r.stdout.replace("│", " ") and "nan" not in r.stdout


# -- 4, 8, 16. the contact sheet finds pictures by their items ------------------------------------------
# (the runs of this file train an epoch of a few pictures and learn nothing: `--force` shows their table anyway,
# which is what these tests read; tests/test_issues.py has the refusal itself)

@pytest.fixture
def folder_run(tmp_path):
    images = make_image_folder(tmp_path / "imgs", per_class=12)
    out = tmp_path / "run"
    train_run(TrainConfig(data=str(images), epochs=1, img_size=8, bs=8, loss="ce"), out)
    return images, out


def test_a_suspect_whose_file_is_gone_is_a_blank_tile_and_the_rest_are_their_own(folder_run, tmp_path):
    from fastgr.images import decode_files
    from fastgr.issues import label_issues, suspect_images

    images, out = folder_run
    top = label_issues(out).head(6)
    gone = images / top["item"].iloc[1]
    gone.rename(tmp_path / "moved.png")
    pics = suspect_images(out, top["index"].tolist(), top["item"].tolist())
    assert (pics[1] == 0).all()
    for k in (0, 2, 3, 4, 5):  # each the pixels of its own file, not a neighbour's after a new listing
        want, _ = decode_files([images / top["item"].iloc[k]], 8, 3)
        assert (pics[k] == want[0].transpose(1, 2, 0)).all()
    r = runner.invoke(app, ["issues", str(out), "--top", "6", "--force"])
    assert r.exit_code == 0 and "1 of the pictures' files are gone since training" in r.stdout


def test_a_run_whose_data_moved_says_so_and_still_draws(folder_run, tmp_path):
    images, out = folder_run
    images.rename(tmp_path / "elsewhere")
    r = runner.invoke(app, ["issues", str(out), "--top", "4", "--force"])
    assert r.exit_code == 0, r.output
    assert "moved?" in r.stdout and "--no-sheet" in r.stdout and (out / "label_issues.png").exists()


def test_a_huge_label_is_clipped_in_the_table_and_the_pictures(tmp_path):
    make_image_folder(tmp_path / "imgs", classes=("a", "b"), per_class=6, split=False)
    huge = "x" * 100_000
    rows = [(f"imgs/{c}/{p.name}", huge if c == "a" else "b") for c in "ab"
            for p in sorted((tmp_path / "imgs" / c).iterdir())]
    out = tmp_path / "run"
    train_run(TrainConfig(data=str(write_csv(tmp_path / "d.csv", rows)), epochs=1, img_size=8, bs=4, loss="ce"), out)
    t0 = time.perf_counter()
    r = runner.invoke(app, ["issues", str(out), "--top", "8", "--force"])
    assert r.exit_code == 0 and time.perf_counter() - t0 < 30
    assert "…" in r.stdout and "x" * 41 not in r.stdout  # clipped to 40 characters, wherever a cell wraps


# -- 5, 12. predict -------------------------------------------------------------------------------------

def test_predict_with_nothing_readable_is_an_error_and_a_folder_out_is_named_at_once(folder_run, tmp_path):
    _, out = folder_run
    bad = tmp_path / "bad"
    bad.mkdir()
    for i in range(2):
        (bad / f"{i}.png").write_bytes(b"not a png")
    csv = tmp_path / "p.csv"
    r = runner.invoke(app, ["predict", str(out), str(bad), "--out", str(csv)])
    assert "none of the 2 image file(s) could be read" in error_line(r) and not csv.exists()
    r = runner.invoke(app, ["predict", str(out), str(bad), "--out", str(tmp_path)])
    assert "is a folder, not a file" in error_line(r)


# -- 6. the channel count comes from the data as a whole ------------------------------------------------

def test_one_grayscale_image_sorted_first_does_not_make_a_colour_set_grey(tmp_path):
    root = tmp_path / "colours"
    rng = np.random.default_rng(0)
    # red and green of equal luminance: told apart by colour only
    for name, rgb in (("green", (0, 128, 0)), ("red", (255, 0, 0))):
        (root / name).mkdir(parents=True)
        for i in range(8):
            px = np.clip(np.array(rgb) + rng.integers(-5, 6, 3), 0, 255).astype(np.uint8)
            Image.fromarray(np.tile(px, (8, 8, 1))).save(root / name / f"img_{i}.png")
    Image.fromarray(np.full((8, 8), 76, np.uint8), mode="L").save(root / "green" / "000_gray.png")  # sorted first
    assert load_data(root, img_size=8).channels == 3
    assert load_data(root, img_size=8, in_memory="no").channels == 3
    gray = tmp_path / "gray"  # every image grayscale (8-bit and 16-bit): one channel
    for name, dtype in (("a", np.uint8), ("b", np.uint16)):
        (gray / name).mkdir(parents=True)
        for i in range(4):
            Image.fromarray(np.full((8, 8), 60 * (i + 1), dtype)).save(gray / name / f"{i}.png")
    assert load_data(gray, img_size=8).channels == 1


# -- 7. resume on the data it started with ----------------------------------------------------------------

def test_resume_refuses_data_that_changed_naming_what(tmp_path):
    from fastgr.dynamics import TrainingDynamics

    images = make_image_folder(tmp_path / "imgs", per_class=10)
    cfg = TrainConfig(data=str(images), epochs=3, img_size=8, bs=8, loss="ce")
    with pytest.raises(KeyboardInterrupt):
        train_run(cfg, tmp_path / "cut", reporter=StopAfter(1))
    gone = images / "train" / "dog" / "train_003.png"
    gone.unlink()
    with pytest.raises(ValueError, match=r"the data changed since this run started \(1 training image\(s\) gone, "
                                         r"e.g. train/dog/train_003.png\)"):
        train_run(cfg, tmp_path / "cut", resume=True)
    # and a checkpoint's per-example sums never go into a run of another size
    dyn = TrainingDynamics(29)
    with pytest.raises(ValueError, match="dynamics of 30 training examples, this run has 29"):
        dyn.load_state_dict({"sums": torch.zeros(4, 31)})


# -- 9, 10. CSVs ---------------------------------------------------------------------------------------

def test_a_csv_naming_an_image_twice_or_only_missing_files_is_refused_in_one_line(tmp_path, image_folder):
    files = sorted((image_folder / "train" / "cat").iterdir())[:4]
    twice = write_csv(tmp_path / "twice.csv", [(str(f), "cat") for f in files] + [(str(files[0]), "dog")])
    r = runner.invoke(app, ["train", str(twice), *TINY, "--out", str(tmp_path / "a")])
    assert "lists 1 image(s) more than once, e.g." in error_line(r) and "with labels 'cat', 'dog'" in error_line(r)
    (tmp_path / "sub").mkdir()
    nowhere = write_csv(tmp_path / "sub" / "rel.csv", [(f"imgs/{f.name}", "cat") for f in files] +
                        [("imgs/x.png", "dog")])
    r = runner.invoke(app, ["train", str(nowhere), *TINY, "--out", str(tmp_path / "b")])
    line = error_line(r)
    assert "none of the 5 paths of rel.csv exists" in line and f"CSV's own folder {tmp_path / 'sub'}" in line


# -- 11. a file that turns unreadable while training --------------------------------------------------

def test_a_file_unreadable_mid_training_is_skipped_named_and_counted(tmp_path):
    from fastgr.stream import StreamDL, UnreadableFileWarning

    images = make_image_folder(tmp_path / "imgs", per_class=4)
    items = [(p, 0) for p in sorted((images / "train" / "cat").iterdir())]
    dl = StreamDL(items, ["cat"], 8, bs=4, shuffle=True, num_workers=0)
    items[1][0].write_bytes(b"garbage now")
    with pytest.warns(UnreadableFileWarning, match="train_001.png: it could not be read now"):
        batches = list(dl)
    assert sum(len(y) for _, y in batches) == 3 and [p for p, _ in dl.unreadable] == [str(items[1][0])]
    assert sorted(dl.batch_idx.tolist()) == [0, 2, 3]  # the kept items' indices, for the per-example records
    # predicting (no shuffle): a blank image in its place, so that each prediction stays beside its own item
    with pytest.warns(UnreadableFileWarning):
        (x, y), = list(dl.new(shuffle=False))
    assert len(y) == 4 and x[1].std() == 0 and x[0].std() > 0


def test_a_streamed_run_says_which_files_it_skipped_while_training_and_lists_them(tmp_path):
    from fastgr import Reporter

    images = make_image_folder(tmp_path / "imgs", per_class=8)
    victim = images / "train" / "owl" / "train_002.png"
    notes = []

    class Corrupting(Reporter):  # the file changes after the run verified it, before its first batch
        def phase(self, name, epochs, start=0):
            victim.write_bytes(b"garbage now")

        def note(self, text, level="info"):
            notes.append(text)

    out = tmp_path / "run"
    cfg = TrainConfig(data=str(images), epochs=1, img_size=8, bs=4, loss="ce", in_memory="no")
    train_run(cfg, out, reporter=Corrupting())  # decoded in a worker process, which tells the loader
    assert any(n.startswith("skipped 1 image file(s) that could not be read while training") for n in notes)
    assert str(victim) in (out / "skipped.txt").read_text()


# -- 13. pretrained weights offline fail fast ---------------------------------------------------------

def test_pretrained_weights_unreachable_fail_at_once(tmp_path, image_folder, monkeypatch):
    from huggingface_hub import constants

    import fastgr.models

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hf"))  # nothing cached
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.setattr(fastgr.models, "HUB", ("127.0.0.1", 9))  # a host that refuses at once, like no network
    t0 = time.perf_counter()
    r = runner.invoke(app, ["train", str(image_folder), "--arch", "resnet18", "--pretrained", *TINY,
                            "--out", str(tmp_path / "r")])
    line = error_line(r)
    assert "cannot be reached (offline?)" in line and "--weights FILE" in line
    assert time.perf_counter() - t0 < 20  # the hub's own client retried for about a minute


# -- 14, 17. the hint after Ctrl-C --------------------------------------------------------------------

def test_ctrl_c_hints_say_what_was_saved_and_the_launch_to_resume_with(tmp_path, monkeypatch):
    from cli.train import interrupted_hint
    from fastgr.runs import RunFolder

    out = tmp_path / "run"
    assert interrupted_hint(out) == "the run had not started: nothing was written"
    out.mkdir()
    RunFolder(out).write("config.json", {})
    assert interrupted_hint(out).startswith("no epoch had finished, so none is saved: fastgr train --out")
    (out / "checkpoint.pth").write_bytes(b"")
    assert interrupted_hint(out).startswith("the last finished epoch is saved: fastgr train --out")
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "2")
    assert "saved: torchrun --nproc_per_node 2 -m fastgr train --out" in interrupted_hint(out)


# -- 15. a full disk ------------------------------------------------------------------------------------

def test_a_full_disk_is_said_in_words_and_the_old_file_stays(tmp_path, monkeypatch):
    import shutil
    from collections import namedtuple

    from fastgr.runs import RunFolder

    folder = RunFolder(tmp_path)
    folder.save_checkpoint({"epoch": 1})
    before = (tmp_path / "checkpoint.pth").read_bytes()
    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr(shutil, "disk_usage", lambda p: usage(10**9, 10**9, 0))

    def full(obj, f, *a, **k):
        raise RuntimeError("[enforce fail at inline_container.cc:671] . unexpected pos 64 vs 0")

    monkeypatch.setattr(torch, "save", full)
    with pytest.raises(OSError, match="no space left on device") as e:
        folder.save_checkpoint({"epoch": 2})
    assert e.value.filename == str(tmp_path / "checkpoint.pth")
    assert (tmp_path / "checkpoint.pth").read_bytes() == before and len(list(tmp_path.iterdir())) == 1
