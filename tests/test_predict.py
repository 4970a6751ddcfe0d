"""`fastgr predict` and `predict_images`: a run's model on new image files and folders."""

import json

import pandas as pd
import pytest
from fastgr.cli import app
from typer.testing import CliRunner

from tests.test_cli import TINY, error_line, run

runner = CliRunner()


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    from tests.conftest import make_image_folder

    root = tmp_path_factory.mktemp("predict")
    data = make_image_folder(root / "imgs", per_class=24, held_out=8)
    run("train", data, *TINY, "--epochs", "4", "--out", root / "run", "--device", "cpu")
    return data, root / "run"


def test_predict_agrees_with_the_runs_test_accuracy(trained, tmp_path):
    from fastgr import predict_images

    data, run_dir = trained
    table = predict_images(run_dir, [data / "valid"], k=2, device="cpu")
    assert list(table.columns) == ["item", "class_1", "prob_1", "class_2", "prob_2"]
    assert len(table) == 24 and not table.attrs["skipped"]
    truth = table["item"].map(lambda p: p.split("/")[-2])
    acc = (table["class_1"] == truth).mean()
    summary = json.loads((run_dir / "summary.json").read_text())
    # the same images, decoded and predicted as the run's own held-out split was
    assert acc == pytest.approx(summary["test_accuracy_final"], abs=1e-6)
    assert (table["prob_1"] >= table["prob_2"]).all() and (table["prob_1"] + table["prob_2"] <= 1 + 1e-6).all()
    assert (table["class_1"] != table["class_2"]).all()


def test_predict_cli_writes_the_csv_and_skips_unreadable_files(trained, tmp_path):
    data, run_dir = trained
    bad = tmp_path / "broken.png"
    bad.write_bytes(b"not an image")
    one = sorted((data / "valid" / "dog").iterdir())[0]
    out = tmp_path / "p.csv"
    r = run("predict", run_dir, one, bad, data / "valid" / "owl", "--top-k", "5", "--out", out)
    table = pd.read_csv(out)
    assert len(table) == 9  # one dog and 8 owls; the broken file is skipped
    assert list(table.columns) == ["item", "class_1", "prob_1", "class_2", "prob_2", "class_3", "prob_3"]  # 3 classes
    assert table["prob_1"].add(table["prob_2"]).add(table["prob_3"]).sub(1).abs().max() < 1e-4
    assert "skipped 1 unreadable file" in r.stderr and f"wrote {out}" in r.stdout
    assert str(one) in table["item"].tolist()


def test_predict_writes_into_the_run_folder_by_default(trained, tmp_path, monkeypatch):
    data, run_dir = trained
    monkeypatch.chdir(tmp_path)  # wherever the user stands, nothing lands there
    one = sorted((data / "valid" / "dog").iterdir())[0]
    r = run("predict", run_dir, one)
    out = run_dir / "predictions.csv"
    assert f"wrote {out}" in r.stdout and pd.read_csv(out)["item"].tolist() == [str(one)]
    assert not any(tmp_path.iterdir())
    r = runner.invoke(app, ["predict", str(run_dir), str(one)])  # a second time: the first is kept
    assert r.exit_code == 1 and "exists; pass --overwrite" in error_line(r)
    out.unlink()


def test_predict_refuses_bad_input_in_one_line_and_keeps_files(trained, tmp_path):
    data, run_dir = trained
    out = tmp_path / "p.csv"
    out.write_text("mine")
    r = runner.invoke(app, ["predict", str(run_dir), str(data / "valid"), "--out", str(out)])
    assert r.exit_code == 1 and "exists; pass --overwrite" in error_line(r)
    assert out.read_text() == "mine"
    r = runner.invoke(app, ["predict", str(tmp_path), str(data / "valid"), "--out", str(tmp_path / "q.csv")])
    assert r.exit_code == 1 and "no exported learner" in error_line(r)
    r = runner.invoke(app, ["predict", str(run_dir), str(tmp_path / "nope.jpg"), "--out", str(tmp_path / "q.csv")])
    assert r.exit_code == 1 and "no such image file or folder" in error_line(r)
    empty = tmp_path / "empty"
    empty.mkdir()
    r = runner.invoke(app, ["predict", str(run_dir), str(empty), "--out", str(tmp_path / "q.csv")])
    assert r.exit_code == 1 and "no image files found" in error_line(r)
    assert not (tmp_path / "q.csv").exists()
