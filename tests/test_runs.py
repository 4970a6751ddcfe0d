"""The run folder's guarantees: inputs checked before anything is touched, --overwrite replaces a whole run, one
process at a time (a lock), and a kill at any moment leaves a folder that --resume finishes to the same files."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import torch
from fastgr.cli import app
from typer.testing import CliRunner

from fastgr import RunFolder, TrainConfig, train_run
from fastgr.runs import LOCK_NAME
from tests.conftest import make_digits_folder, make_image_folder

ROOT = Path(__file__).parents[1]
runner = CliRunner()
TINY = ["--epochs", "2", "--img-size", "8", "--bs", "16"]


def snapshot(folder: Path) -> dict:
    "Every file below `folder`: its bytes and modification time."
    return {p.relative_to(folder).as_posix(): (p.read_bytes(), p.stat().st_mtime_ns)
            for p in sorted(folder.rglob("*")) if p.is_file()}


def one_red_line(result) -> str:
    lines = [ln for ln in result.stderr.splitlines() if ln.strip()]
    assert result.exit_code == 1 and len(lines) == 1 and lines[0].startswith("error: "), result.output
    return lines[0]


@pytest.fixture
def finished(tmp_path, image_folder):
    out = tmp_path / "run"
    # a folder a few epochs learn: the correction needs a model above chance (the tiny folder's is not)
    digits = make_digits_folder(tmp_path / "digits")
    r = runner.invoke(app, ["train", str(digits), "--noise", "0.25", "--epochs", "4", "--img-size", "8", "--bs", "64",
                            "--correct", "--out", str(out)])
    assert r.exit_code == 0, r.output
    return out


def test_every_input_is_checked_before_the_folder_is_touched(tmp_path, image_folder, finished, monkeypatch):
    before = snapshot(finished)
    other = tmp_path / "other.csv"
    assert runner.invoke(app, ["noise", "digits", "--rate", "0.2", "--out", str(other)]).exit_code == 0
    bad = {
        "unknown architecture 'resnet9999'": ["--arch", "resnet9999"],
        "unknown dataset or missing path": [str(tmp_path / "nowhere")],
        "CUDA is not available": ["--device", "cuda"],
        "not among the data's 3 classes": ["--labels", str(other)],
        "has no pretrained weights": ["--arch", "cifar_resnet20", "--pretrained"],
    }
    for message, args in bad.items():
        data = [] if args[0].startswith(str(tmp_path / "nowhere")) else [str(image_folder)]
        r = runner.invoke(app, ["train", *data, *args, *TINY, "--overwrite", "--out", str(finished)])
        assert message in one_red_line(r), (message, r.output)
        assert snapshot(finished) == before, message
    # a tuning grid is checked whole before the first setting trains
    r = runner.invoke(app, ["tune", str(image_folder), "--grid", "0.5,8 inf,8", *TINY, "--overwrite",
                            "--out", str(finished)])
    assert "lam must be a finite number >= 0, got inf" in one_red_line(r)
    assert snapshot(finished) == before
    # pretrained weights that cannot be fetched (offline)
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hf"))
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    r = runner.invoke(app, ["train", str(image_folder), "--arch", "resnet18", "--pretrained", *TINY, "--overwrite",
                            "--out", str(finished)])
    assert "could not fetch pretrained weights" in one_red_line(r)
    assert snapshot(finished) == before


def test_overwrite_replaces_the_whole_previous_run(finished, image_folder):
    for f in ("examples.csv", "weights_vs_p.png", "correction.json", "retrain/learner.pkl"):
        assert (finished / f).exists(), f
    assert runner.invoke(app, ["correct", str(finished)]).exit_code == 0
    (finished / "notes.txt").write_text("mine")
    r = runner.invoke(app, ["train", str(image_folder), "--loss", "ce", *TINY, "--overwrite", "--out", str(finished)])
    assert r.exit_code == 0, r.output
    names = {p.relative_to(finished).as_posix() for p in finished.rglob("*")}
    assert names == {"notes.txt", "config.json", "metrics.csv", "labels.csv", "labels.csv.json", "summary.json",
                     "result.json", "learner.pkl", "curves.png", "label_issues.csv"}, names
    assert (finished / "notes.txt").read_text() == "mine"
    assert json.loads((finished / "summary.json").read_text())["loss"] == "ce"


def test_a_running_run_is_locked_and_a_dead_ones_lock_is_taken_over(tmp_path, image_folder):
    import socket

    out = tmp_path / "run"
    out.mkdir()
    alive = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        (out / LOCK_NAME).write_text(json.dumps({"pid": alive.pid, "host": socket.gethostname()}))
        for args in (["train", str(image_folder), *TINY, "--out", str(out)],
                     ["train", str(image_folder), *TINY, "--overwrite", "--out", str(out)]):
            line = one_red_line(runner.invoke(app, args))
            assert f"being written by fastgr process {alive.pid}" in line
        assert sorted(p.name for p in out.iterdir()) == [LOCK_NAME]
    finally:
        alive.kill()
        alive.wait()
    # the process is gone (a kill): its lock is stale, and the next run takes it over
    r = runner.invoke(app, ["train", str(image_folder), *TINY, "--overwrite", "--out", str(out)])
    assert r.exit_code == 0, r.output
    assert (out / "summary.json").exists() and not (out / LOCK_NAME).exists()


def test_a_failed_run_leaves_no_empty_folder(tmp_path, image_folder, monkeypatch):
    monkeypatch.chdir(tmp_path)
    r = runner.invoke(app, ["train", str(image_folder), "--arch", "resnet9999", *TINY])
    one_red_line(r)
    assert not (tmp_path / "runs").exists()
    # a failure after the folder was made, before anything of the run was written: made, then removed again
    folder = RunFolder(tmp_path / "runs" / "deep" / "run")
    with pytest.raises(RuntimeError, match="boom"), folder.open():
        assert (tmp_path / "runs" / "deep" / "run" / LOCK_NAME).exists()
        raise RuntimeError("boom")
    assert not (tmp_path / "runs").exists()


KILL_POINTS = ["after the last checkpoint", "inside the last checkpoint", "after learner.pkl", "before result.json",
               "before summary.json"]


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    folder = make_image_folder(tmp_path_factory.mktemp("data") / "imgs")
    cfg = dict(data=str(folder), noise=0.25, epochs=2, img_size=8, bs=16)
    out = tmp_path_factory.mktemp("full") / "run"
    train_run(TrainConfig(**cfg), out)
    return cfg, out


def same_run(a: Path, b: Path) -> None:
    "The same files, the same numbers: only the seconds differ."
    files = lambda d: {p.relative_to(d).as_posix() for p in d.rglob("*")}  # noqa: E731
    assert files(a) == files(b)
    for csv in ("metrics.csv", "labels.csv", "examples.csv", "label_issues.csv"):
        fa, fb = pd.read_csv(a / csv), pd.read_csv(b / csv)
        pd.testing.assert_frame_equal(fa.drop(columns=["seconds"], errors="ignore"),
                                      fb.drop(columns=["seconds"], errors="ignore"))
    sa, sb = (json.loads((d / "summary.json").read_text()) for d in (a, b))
    assert {k: v for k, v in sa.items() if k != "seconds"} == {k: v for k, v in sb.items() if k != "seconds"}
    from fastai.learner import load_learner

    ma, mb = (load_learner(d / "learner.pkl").model.state_dict() for d in (a, b))
    assert all(torch.equal(ma[k], mb[k]) for k in ma)


@pytest.mark.parametrize("point", KILL_POINTS)
def test_a_kill_at_any_moment_resumes_to_the_same_files(tmp_path, uninterrupted, point):
    cfg, full = uninterrupted
    out = tmp_path / "run"
    p = subprocess.run([sys.executable, "-m", "tests.killer", point, str(out), json.dumps(cfg)], cwd=ROOT,
                       capture_output=True, text=True, timeout=300, env={**os.environ, "PYTHONWARNINGS": "ignore"})
    assert p.returncode == -9, p.stderr[-2000:]  # killed where asked, not finished nor failed
    assert (out / LOCK_NAME).exists() and not (out / "summary.json").exists()
    if point == "inside the last checkpoint":
        assert list(out.glob(".checkpoint.pth.*.tmp"))
    train_run(TrainConfig(), out, resume=True)
    assert not (out / LOCK_NAME).exists() and not (out / "checkpoint.pth").exists()
    assert not list(out.rglob("*.tmp"))
    same_run(out, full)
