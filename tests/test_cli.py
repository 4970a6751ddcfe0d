"""The fastgr command line: every command, option group and bad-input case, on data the tests make."""

import json
import re
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
from fastgr.cli import app
from typer.testing import CliRunner

from tests.conftest import make_digits_folder, make_image_folder

runner = CliRunner()
TINY = ["--epochs", "2", "--img-size", "8", "--bs", "16"]


def run(*args, code=0):
    result = runner.invoke(app, [str(a) for a in args])
    assert result.exit_code == code, f"exit {result.exit_code}\n{result.output}\n{result.exception!r}"
    return result


def error_line(result) -> str:
    "The one red line of an error: exactly one non-empty line on stderr, starting with 'error:'."
    lines = [ln for ln in result.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: ")
    return lines[0]


# -- weights, models, --version ---------------------------------------------------------------------

def test_weights_prints_focus_spread_and_curve(tmp_path):
    r = run("weights", "--lam", 1, "--beta", 16, "--steps", 11)
    assert "emphasis focus  lam/(1+lam) = 0.500" in r.stdout
    # the curve at p = 0.5 is exp(16 * 0.5 * 0.5) = exp(4) = 54.6, its peak
    assert re.search(r"0\.50 \S*\s+54\.6\b", r.stdout)
    assert re.search(r"1\.00 \S*\s+1\b", r.stdout)
    # both spreads, named apart: Def. 2's raw variance of exp(16 p (1 - p)) over p uniform, and the variance at mean 1
    import numpy as np

    w = np.exp(16 * np.linspace(0, 1, 1001) * (1 - np.linspace(0, 1, 1001)))
    text = " ".join(r.stdout.split())
    assert f"raw variance (the paper's Def. 2) = {w.var():.4g}" in text
    assert f"variance at mean 1 = {(w / w.mean()).var():.4g}" in text
    assert "raw variance (the paper's Def. 2) = e^996.4" in " ".join(run("weights", "--lam", 1, "--beta", 2000,
                                                                          "--steps", 3).stdout.split())
    png = tmp_path / "w.png"
    run("weights", "--lam", 0.5, "--beta", 8, "--plot", png)
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    before = png.stat().st_mtime_ns
    r = run("weights", "--plot", png, code=1)
    assert "exists; pass --overwrite" in error_line(r)
    assert png.stat().st_mtime_ns == before
    run("weights", "--plot", png, "--overwrite")


def test_weights_rejects_negative_settings_as_usage_errors():
    assert runner.invoke(app, ["weights", "--beta", "-1"]).exit_code == 2
    assert runner.invoke(app, ["weights", "--lam", "-0.5"]).exit_code == 2


def test_models_lists_cifar_resnets_and_filters_timm():
    r = run("models")
    for depth in (20, 32, 44, 56, 110):
        assert f"cifar_resnet{depth} " in r.stdout
    r = run("models", "resnet1*")
    assert "resnet18" in r.stdout and "cifar_resnet" not in r.stdout
    r = run("models", "resnet18", "--pretrained")
    assert "resnet18" in r.stdout and "yes" in r.stdout


def test_version_and_python_dash_m():
    import fastgr

    assert run("--version").stdout.strip() == f"fastgr {fastgr.__version__}"
    out = subprocess.run([sys.executable, "-m", "fastgr", "--help"], capture_output=True, text=True, check=True)
    assert "train" in out.stdout and "noise" in out.stdout and "weights" in out.stdout


def test_every_command_help_shows_an_example():
    for cmd in ("train", "tune", "noise", "correct", "weights", "models"):
        r = run(cmd, "--help")
        assert re.search(r"Examples?:", r.stdout), cmd
        assert "fastgr " + cmd in r.stdout, cmd


def test_help_shows_the_defaults_written_into_it(monkeypatch):
    "Rich would take a bare `[default: ...]` for markup and drop it."
    monkeypatch.setenv("COLUMNS", "400")
    text = " ".join(run("train", "--help").stdout.split())
    for shown in ("[default: 0.5; 1 from 40 epochs; or the preset's]",
                  "[default: 8; 16 from 40 epochs; or the preset's]",
                  "[default: the setting's own: 0.5 for the paper's presets", "[default: runs/<data>-<loss>-<time>]",
                  "[default: digits 16, CIFAR 32", "[default: cuda when available]"):
        assert shown in text, shown
    assert "[default: none kept]" in " ".join(run("tune", "--help").stdout.split())


# -- noise ----------------------------------------------------------------------------------------------

def test_noise_draws_saves_and_is_reproducible(tmp_path):
    out = tmp_path / "labels.csv"
    r = run("noise", "digits", "--rate", 0.4, "--seed", 3, "--out", out)
    assert "realised noise rate 0.40" in r.stdout
    df = pd.read_csv(out, dtype={"true_label": str, "given_label": str})
    assert list(df.columns) == ["index", "item", "true_label", "given_label", "flipped"]
    assert len(df) == 1437
    assert (df["flipped"] == (df["true_label"] != df["given_label"]).astype(int)).all()
    assert df["flipped"].mean() == pytest.approx(0.4, abs=0.005)
    meta = json.loads(out.with_name("labels.csv.json").read_text())
    assert meta["noise_type"] == "symmetric" and meta["seed"] == 3 and meta["rate"] == 0.4
    again = tmp_path / "again.csv"
    run("noise", "digits", "--rate", 0.4, "--seed", 3, "--out", again)
    assert again.read_text() == out.read_text()
    # another seed, another draw
    other = tmp_path / "other.csv"
    run("noise", "digits", "--rate", 0.4, "--seed", 4, "--out", other)
    assert other.read_text() != out.read_text()
    # never overwrites unasked
    r = run("noise", "digits", "--rate", 0.2, "--out", out, code=1)
    assert "exists; pass --overwrite" in error_line(r)
    assert again.read_text() == out.read_text()


def test_noise_pairflip_and_asymmetric(tmp_path):
    run("noise", "digits", "--rate", 0.3, "--type", "pairflip", "--out", tmp_path / "p.csv")
    df = pd.read_csv(tmp_path / "p.csv")
    moved = df[df.flipped == 1]
    assert ((moved.true_label + 1) % 10 == moved.given_label).all()
    run("noise", "digits", "--rate", 0.5, "--type", "asymmetric", "--out", tmp_path / "a.csv")
    df = pd.read_csv(tmp_path / "a.csv")
    pairs = set(zip(df[df.flipped == 1].true_label, df[df.flipped == 1].given_label))
    assert pairs == {(9, 1), (2, 0), (4, 7), (3, 5), (5, 3)}


@pytest.mark.parametrize("rate", ["1", "1.5", "-0.1"])
def test_noise_rate_outside_0_1_is_a_usage_error(tmp_path, rate):
    r = runner.invoke(app, ["noise", "digits", "--rate", rate, "--out", str(tmp_path / "x.csv")])
    assert r.exit_code == 2 and "noise rate must be in [0, 1)" in r.output
    r = runner.invoke(app, ["train", "--noise", rate])
    assert r.exit_code == 2
    assert not (tmp_path / "x.csv").exists()


# -- train on folders and CSVs ----------------------------------------------------------------------------

def read_run(out: Path):
    return (json.loads((out / "summary.json").read_text()), pd.read_csv(out / "metrics.csv"),
            json.loads((out / "config.json").read_text()))


def test_train_on_an_image_folder_writes_the_run_folder(tmp_path, image_folder):
    import torch

    out = tmp_path / "run"
    r = run("train", image_folder, "--noise", 0.25, *TINY, "--out", out)
    summary, metrics, config = read_run(out)
    for key in ("test_accuracy_final", "test_accuracy_best", "train_accuracy_given", "train_accuracy_true",
                "noise_rate_realised", "seconds"):
        assert key in summary
    for key in ("test_accuracy_final", "test_accuracy_best", "train_accuracy_given", "train_accuracy_true",
                "noise_rate_realised"):
        assert 0 <= summary[key] <= 1, key
    assert summary["seconds"] > 0
    # 3 classes x 16 images, 25% of each class flipped: 4 per class
    assert summary["noise_rate_realised"] == pytest.approx(12 / 48)
    assert summary["test_accuracy_best"] == pytest.approx(metrics["test_acc"].max())
    assert summary["test_accuracy_final"] == pytest.approx(metrics["test_acc"].iloc[-1])
    assert list(metrics["epoch"]) == [1, 2]
    assert {"train_loss", "valid_loss", "test_acc", "train_acc_given", "train_acc_true", "gr_spread", "gr_ess",
            "gr_mean_p", "seconds"} <= set(metrics.columns)
    assert config["versions"].keys() >= {"fastgr", "fastai", "torch", "timm"}
    # the CPU's kind: seeded CPU runs agree to the digit only on one kind (torch's kernel family comes first)
    assert config["versions"]["cpu"].startswith(torch.backends.cpu.get_cpu_capability() + ", ")
    assert config["config"]["epochs"] == 2 and config["resolved"]["lam"] == 0.5
    assert config["data"]["classes"] == ["cat", "dog", "owl"] and config["data"]["n_train"] == 48
    labels = pd.read_csv(out / "labels.csv")
    assert list(labels.columns) == ["index", "item", "true_label", "given_label", "flipped"]
    assert labels["item"].iloc[0] == "train/cat/train_000.png"
    assert labels["flipped"].sum() == 12
    for f in ("learner.pkl", "curves.png", "weights_vs_p.png", "weights_flipped_clean.png", "examples.csv"):
        assert (out / f).stat().st_size > 0, f
    assert not (out / "checkpoint.pth").exists()
    # the live table showed every epoch and the summary
    assert r.stdout.count("test acc") >= 2 and "summary" in r.stdout


def test_exported_learner_loads_and_predicts_like_the_run(tmp_path, image_folder):
    import torch
    from fastai.learner import load_learner

    from fastgr.data import load_data
    from fastgr.loader import ImageTensors

    out = tmp_path / "run"
    run("train", image_folder, *TINY, "--out", out)
    learn = load_learner(out / "learner.pkl")
    assert learn.dls.vocab == ["cat", "dog", "owl"]
    data = load_data(image_folder, img_size=8)
    dl = learn.dls.train.new(ImageTensors(data.valid_x, data.valid_y), shuffle=False, drop_last=False,
                             augment="none")
    probs, y = learn.get_preds(dl=dl)
    acc = (probs.argmax(1) == y).float().mean().item()
    summary = json.loads((out / "summary.json").read_text())
    assert acc == pytest.approx(summary["test_accuracy_final"], abs=1e-6)
    assert torch.allclose(probs.sum(1), torch.ones(len(y)))


def test_train_on_a_csv_with_and_without_is_valid(tmp_path, image_folder):
    rows = [(p.relative_to(image_folder).as_posix(), p.parent.name, p.parts[-3] == "valid")
            for p in sorted(image_folder.rglob("*.png"))]
    csv = image_folder / "data.csv"
    pd.DataFrame(rows, columns=["path", "label", "is_valid"]).to_csv(csv, index=False)
    out = tmp_path / "csv_run"
    run("train", csv, *TINY, "--loss", "ce", "--out", out)
    summary, metrics, config = read_run(out)
    assert config["data"]["n_train"] == 48 and config["data"]["n_valid"] == 18
    assert "gr_spread" not in metrics.columns and summary["lam"] is None
    assert not (out / "weights_vs_p.png").exists()
    plain = image_folder / "plain.csv"
    pd.DataFrame([r[:2] for r in rows], columns=["path", "label"]).to_csv(plain, index=False)
    run("train", plain, *TINY, "--valid-pct", 0.25, "--out", tmp_path / "plain_run")
    _, _, config = read_run(tmp_path / "plain_run")
    assert config["data"]["n_valid"] == 3 * round(0.25 * 22) and config["data"]["n_train"] == 66 - 18


def test_train_with_a_shared_labels_file(tmp_path, image_folder):
    labels = tmp_path / "noisy.csv"
    run("noise", image_folder, "--rate", 0.5, "--seed", 7, "--out", labels)
    drawn = pd.read_csv(labels)
    for loss in ("gr", "ce"):
        out = tmp_path / f"run_{loss}"
        run("train", image_folder, "--labels", labels, "--loss", loss, *TINY, "--out", out)
        used = pd.read_csv(out / "labels.csv")
        assert (used["given_label"] == drawn["given_label"]).all()
        assert (used["true_label"] == drawn["true_label"]).all()
        assert json.loads((out / "summary.json").read_text())["noise_rate_realised"] == pytest.approx(0.5)
    # a labels file drawn for other data is refused
    other = tmp_path / "other.csv"
    run("noise", "digits", "--rate", 0.2, "--out", other)
    r = run("train", image_folder, "--labels", other, *TINY, "--out", tmp_path / "bad", code=1)
    assert "not among the data's" in error_line(r) or "does not match the data" in error_line(r)


def test_preset_takes_the_papers_setting_and_warns(tmp_path, image_folder):
    out = tmp_path / "preset"
    r = run("train", image_folder, "--noise", 0.4, "--preset", *TINY, "--out", out)
    _, _, config = read_run(out)
    assert (config["resolved"]["lam"], config["resolved"]["beta"]) == (1.0, 16.0)
    assert "CIFAR-10, r=0.4" in config["resolved"]["setting_source"]
    assert config["resolved"]["warmup"] == 0.5  # the preset's own warm-up
    assert "chosen on long runs over all of CIFAR" in r.stdout
    assert "preset lam=1, beta=16, warm-up 0.5 from CIFAR-10, r=0.4" in " ".join(r.stdout.split())
    assert "symmetric noise only" not in " ".join(r.stdout.split())
    # the paper's tables cover symmetric noise only: pairflip (or a labels file of human noise) is warned about
    r = run("train", image_folder, "--noise", 0.3, "--noise-type", "pairflip", "--preset", *TINY, "--epochs", 1,
            "--out", tmp_path / "pairflip")
    assert "measured with symmetric noise only; for pairflip noise" in " ".join(r.stdout.split())
    out2 = tmp_path / "given"
    run("train", image_folder, "--lam", 2, "--beta", 3, *TINY, "--out", out2)
    summary, _, config = read_run(out2)
    assert (config["resolved"]["lam"], config["resolved"]["beta"], config["resolved"]["warmup"]) == (2.0, 3.0, 0.0)
    assert summary["warmup"] == 0.0
    out3 = tmp_path / "preset-no-warmup"
    run("train", image_folder, "--noise", 0.4, "--preset", "--warmup", 0, *TINY, "--out", out3)
    assert read_run(out3)[2]["resolved"]["warmup"] == 0.0


# -- bad input --------------------------------------------------------------------------------------------

def test_unknown_dataset_arch_and_missing_paths(tmp_path):
    r = run("train", "imagenet", "--out", tmp_path / "a", code=1)
    assert "unknown dataset or missing path 'imagenet'" in error_line(r)
    r = run("train", tmp_path / "nowhere", "--out", tmp_path / "b", code=1)
    assert "nowhere" in error_line(r)
    r = run("train", "--arch", "resnet_9000", *TINY, "--out", tmp_path / "c", code=1)
    assert "unknown architecture 'resnet_9000'" in error_line(r)
    r = run("train", "--labels", tmp_path / "none.csv", "--out", tmp_path / "d", code=1)
    assert "no such labels file" in error_line(r)
    r = run("correct", tmp_path / "no_run", code=1)
    assert "not a finished fastgr run" in error_line(r)
    empty = tmp_path / "empty"
    empty.mkdir()
    r = run("train", empty, "--out", tmp_path / "e", code=1)
    assert "holds no images" in error_line(r)


def test_bad_csvs(tmp_path, image_folder):
    bad = image_folder / "bad.csv"
    bad.write_text("file,class\ntrain/cat/train_000.png,cat\n")
    r = run("train", bad, "--out", tmp_path / "a", code=1)
    assert "lacks the column(s) path, label" in error_line(r)
    rows = [(p.relative_to(image_folder).as_posix(), p.parent.name) for p in sorted(image_folder.rglob("*.png"))]
    import shutil

    shutil.copy(image_folder / "train" / "cat" / "train_000.png", image_folder / "stray.png")  # a row of its own
    rows.append(("stray.png", "zebra"))
    csv = image_folder / "zebra.csv"
    pd.DataFrame(rows, columns=["path", "label"]).to_csv(csv, index=False)
    r = run("train", csv, "--classes", "cat,dog,owl", "--out", tmp_path / "b", code=1)
    assert "'zebra' are not in the class list (cat, dog, owl)" in error_line(r)
    binary = image_folder / "binary.csv"
    binary.write_bytes(b"\xff\xfe\x00\x01garbage\x00")
    r = run("train", binary, "--out", tmp_path / "c", code=1)
    assert "csv" in error_line(r).lower()


def test_corrupt_images_are_skipped_and_counted(tmp_path):
    folder = make_image_folder(tmp_path / "imgs", corrupt=2)
    out = tmp_path / "run"
    r = run("train", folder, *TINY, "--out", out)
    summary = json.loads((out / "summary.json").read_text())
    assert summary["skipped_files"] == 2
    skipped = (out / "skipped.txt").read_text().splitlines()
    assert len(skipped) == 2 and all("broken_" in s for s in skipped)
    assert "skipped 2 unreadable image file(s)" in r.stdout
    assert json.loads((out / "config.json").read_text())["data"]["n_train"] == 48


def test_balanced_batches_are_kept_and_refused_for_streamed_files(tmp_path, image_folder):
    "`--balanced` reaches the training loader (the exported one keeps it); streamed files: one line, no folder."
    from fastai.learner import load_learner

    out = tmp_path / "run"
    run("train", image_folder, *TINY, "--balanced", "--out", out)
    assert read_run(out)[2]["config"]["balanced"] is True
    assert load_learner(out / "learner.pkl").dls.train.balanced
    streamed = tmp_path / "streamed"
    r = run("train", image_folder, *TINY, "--balanced", "--in-memory", "no", "--out", streamed, code=1)
    assert "class-balanced batches (--balanced) need the data in memory" in error_line(r)
    assert not streamed.exists()


def test_existing_run_folder_is_refused_and_user_files_survive(tmp_path, image_folder):
    out = tmp_path / "run"
    out.mkdir()
    mine = out / "notes.txt"
    mine.write_text("my notes")
    r = run("train", image_folder, *TINY, "--out", out, code=1)
    assert "exists; pass --overwrite" in error_line(r)
    assert sorted(p.name for p in out.iterdir()) == ["notes.txt"]
    run("train", image_folder, *TINY, "--out", out, "--overwrite")
    assert mine.read_text() == "my notes" and (out / "summary.json").exists()
    r = run("train", image_folder, *TINY, "--out", out, "--resume", code=1)
    assert "finished run" in error_line(r)
    assert runner.invoke(app, ["train", "--resume"]).exit_code == 2  # --resume needs --out


def test_pretrained_weights_offline_is_one_line(tmp_path, image_folder, monkeypatch):
    from huggingface_hub import constants

    # what HF_HUB_OFFLINE=1 with an empty cache does (the hub reads its environment once, at import)
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hf"))
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    r = run("train", image_folder, "--arch", "resnet18", "--pretrained", *TINY, "--out", tmp_path / "r", code=1)
    line = error_line(r)
    assert "could not fetch pretrained weights for resnet18" in line and "--no-pretrained" in line
    r = run("train", image_folder, "--arch", "cifar_resnet20", "--pretrained", *TINY, "--out", tmp_path / "s",
            code=1)
    assert "has no pretrained weights" in error_line(r)


def test_cifar_download_unreachable_names_the_local_copy(tmp_path, monkeypatch):
    import fastdownload.core

    def offline(url, dest, *a, **k):
        raise ConnectionError(f"cannot reach {url}")

    monkeypatch.setenv("FASTAI_HOME", str(tmp_path / "fastai_home"))
    monkeypatch.setattr(fastdownload.core, "download_url", offline)
    for name in ("cifar10", "cifar100"):
        r = run("train", name, "--out", tmp_path / name, code=1)
        line = error_line(r)
        assert f"could not download {name}" in line and "local copy" in line and "train/ and test/" in line


def test_debug_shows_the_traceback(tmp_path):
    r = runner.invoke(app, ["--debug", "train", "imagenet", "--out", str(tmp_path / "x")])
    assert r.exit_code == 1 and isinstance(r.exception, FileNotFoundError)
    r = runner.invoke(app, ["train", "imagenet", "--out", str(tmp_path / "x")])
    assert isinstance(r.exception, SystemExit) and "Traceback" not in r.output


# a folder whose labels a few epochs learn: a correction needs a model above chance (`fastgr.issues.learning_verdict`)
LEARNS = ["--epochs", "4", "--img-size", "8", "--bs", "64"]


def test_correct_without_known_truth_says_unknown(tmp_path):
    out = tmp_path / "run"
    run("train", make_digits_folder(tmp_path / "digits"), *LEARNS, "--correct", "--out", out)
    summary = json.loads((out / "summary.json").read_text())
    assert summary["truth_known"] is False
    assert summary["correction_precision"] is None and summary["correction_recall"] is None
    assert summary["train_accuracy_true"] is None and summary["noise_rate_realised"] is None
    assert 0 <= summary["relabelled_fraction"] <= 1 and 0 <= summary["test_accuracy_after_correction"] <= 1
    assert "corrected_label" in pd.read_csv(out / "labels.csv").columns
    r = run("correct", out)
    assert "precision and recall are unknown" in r.stdout


def test_correct_command_relabels_and_reports(tmp_path):
    out, digits = tmp_path / "run", make_digits_folder(tmp_path / "digits")
    run("train", digits, "--noise", 0.3, *LEARNS, "--out", out)
    r = run("correct", out, "--threshold", 0.0)
    fixed = pd.read_csv(out / "labels_corrected.csv")
    report = json.loads((out / "labels_corrected.report.json").read_text())
    changed = fixed["given_label"] != fixed["original_label"]
    assert report["relabelled"] == int(changed.sum())
    right = fixed["given_label"] == fixed["true_label"]
    if changed.any():
        assert report["correction_precision"] == pytest.approx(right[changed].mean())
    noisy = fixed["original_label"] != fixed["true_label"]
    assert report["correction_recall"] == pytest.approx(right[noisy].mean())
    assert "label correction" in r.stdout
    run("correct", out, code=1)  # exists: refused
    # retrain on the corrected labels through --labels
    run("train", digits, "--labels", out / "labels_corrected.csv", *TINY, "--out", tmp_path / "again")
    used = pd.read_csv(tmp_path / "again" / "labels.csv")
    assert (used["given_label"] == fixed["given_label"]).all()
