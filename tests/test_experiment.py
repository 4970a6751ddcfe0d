"""Training runs as library calls: interruption and resume, the correction protocol, GR against CE on digits."""

import json

import pandas as pd
import pytest
import torch

from fastgr import Reporter, TrainConfig, train_run
from fastgr.training import RunLog


class StopAfter(Reporter):
    "Interrupts training (as Ctrl-C would) once `n` epochs are done."

    def __init__(self, n):
        self.n, self.seen = n, 0

    def epoch(self, row):
        self.seen += 1
        if self.seen == self.n:
            raise KeyboardInterrupt


def strip_seconds(frame: pd.DataFrame) -> pd.DataFrame:
    return frame.drop(columns=["seconds"])


def model_state(path):
    from fastai.learner import load_learner

    return load_learner(path).model.state_dict()


@pytest.mark.parametrize("correct", [False, True])
def test_interrupted_run_resumes_to_the_same_result(tmp_path, image_folder, correct):
    # the correction needs a model that has learned (`fastgr.issues.learning_verdict`): the tiny folder's is at chance
    cfg = dict(data="digits" if correct else str(image_folder), noise=0.25, epochs=4, img_size=8, bs=64 if correct
               else 16, correct=correct)
    full = train_run(TrainConfig(**cfg), tmp_path / "full")

    # interrupted after epoch 2 of training (or of retraining, with --correct)
    stop = 4 + 2 if correct else 2
    with pytest.raises(KeyboardInterrupt):
        train_run(TrainConfig(**cfg), tmp_path / "cut", reporter=StopAfter(stop))
    cut = tmp_path / "cut" / ("retrain" if correct else "")
    assert (cut / "checkpoint.pth").exists() and not (tmp_path / "cut" / "summary.json").exists()
    assert len(pd.read_csv(cut / "metrics.csv")) == 2

    # --resume reads the run's own config; the settings passed in are ignored
    resumed = train_run(TrainConfig(epochs=99), tmp_path / "cut", resume=True)
    for key in full:
        if key != "seconds":
            assert resumed[key] == full[key], key
    sub = "retrain" if correct else "."
    pd.testing.assert_frame_equal(strip_seconds(pd.read_csv(tmp_path / "cut" / sub / "metrics.csv")),
                                  strip_seconds(pd.read_csv(tmp_path / "full" / sub / "metrics.csv")))
    a, b = model_state(tmp_path / "cut" / sub / "learner.pkl"), model_state(tmp_path / "full" / sub / "learner.pkl")
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not (cut / "checkpoint.pth").exists()
    if correct:  # --correct relabels to the report's model_label: the two lists agree, label for label
        issues = pd.read_csv(tmp_path / "full" / "label_issues.csv").set_index("item")
        labels = pd.read_csv(tmp_path / "full" / "labels.csv").set_index("item")
        assert (labels["corrected_label"] != labels["given_label"]).any()
        assert labels["corrected_label"].equals(issues.loc[labels.index, "model_label"].rename("corrected_label"))


def test_cli_interrupt_exits_130_and_resume_finishes(tmp_path, image_folder, monkeypatch):
    from fastgr.cli import app
    from typer.testing import CliRunner

    args = [str(image_folder), "--noise", "0.25", "--epochs", "3", "--img-size", "8", "--bs", "16"]
    runner = CliRunner()
    assert runner.invoke(app, ["train", *args, "--out", str(tmp_path / "full")]).exit_code == 0

    original = RunLog.after_epoch

    def ctrl_c_after_first(self):
        original(self)
        if self.trained and self.epoch == 0:
            raise KeyboardInterrupt

    monkeypatch.setattr(RunLog, "after_epoch", ctrl_c_after_first)
    r = runner.invoke(app, ["train", *args, "--out", str(tmp_path / "cut")])
    assert r.exit_code == 130 and "--resume" in r.stdout
    assert len(pd.read_csv(tmp_path / "cut" / "metrics.csv")) == 1
    monkeypatch.setattr(RunLog, "after_epoch", original)
    r = runner.invoke(app, ["train", "--out", str(tmp_path / "cut"), "--resume"])
    assert r.exit_code == 0, r.output
    pd.testing.assert_frame_equal(strip_seconds(pd.read_csv(tmp_path / "cut" / "metrics.csv")),
                                  strip_seconds(pd.read_csv(tmp_path / "full" / "metrics.csv")))


def test_gr_beats_ce_on_noisy_digits_and_correction_is_precise(tmp_path):
    """The demo, smaller: digits at 8x8, 20 epochs, 40% symmetric noise, then label correction and retraining."""
    from fastgr.cli import app
    from typer.testing import CliRunner

    runner = CliRunner()
    summaries = {}
    for loss in ("gr", "ce"):
        out = tmp_path / loss
        r = runner.invoke(app, ["train", "--loss", loss, "--img-size", "8", "--epochs", "20", "--correct",
                                "--out", str(out)])
        assert r.exit_code == 0, r.output
        summaries[loss] = json.loads((out / "summary.json").read_text())
    gr, ce = summaries["gr"], summaries["ce"]
    assert gr["noise_rate_realised"] == pytest.approx(0.4, abs=0.002)
    assert gr["test_accuracy_final"] >= ce["test_accuracy_final"] + 0.1, (gr, ce)
    assert ce["train_accuracy_given"] > 0.95  # CE memorised the wrong labels
    assert gr["correction_precision"] > 0.5 and gr["correction_recall"] > 0.5
    assert gr["noise_rate_after_correction"] < 0.2
    assert gr["test_accuracy_after_correction"] >= gr["test_accuracy_final"] - 0.02


def test_compiled_run_trains_as_eager_resumes_and_exports_the_model_itself(tmp_path, image_folder, monkeypatch):
    """`--compile MODE` wraps the model in torch.compile; checkpoints and learner.pkl hold the model itself, so a
    resume and `load_learner` work as for an eager run. torch.compile's own backends are swapped for its `eager`
    one here (the same kernels: a fast test of the plumbing; bench/compile_check.py measures real compilation)."""
    real, modes = torch.compile, []

    def fast_compile(model, mode=None, **kwargs):
        modes.append(mode)
        return real(model, backend="eager")

    monkeypatch.setattr(torch, "compile", fast_compile)
    cfg = dict(data=str(image_folder), noise=0.25, epochs=3, img_size=8, bs=16)
    eager = train_run(TrainConfig(**cfg), tmp_path / "eager")
    with pytest.raises(KeyboardInterrupt):
        train_run(TrainConfig(**cfg, compile="reduce-overhead"), tmp_path / "cut", reporter=StopAfter(1))
    assert "_orig_mod." not in "".join(torch.load(tmp_path / "cut" / "checkpoint.pth", weights_only=False)["model"])
    resumed = train_run(TrainConfig(epochs=99), tmp_path / "cut", resume=True)
    assert modes == ["reduce-overhead", "reduce-overhead"]  # the resumed run read --compile from config.json
    assert resumed["test_accuracy_final"] == pytest.approx(eager["test_accuracy_final"], abs=1e-6)
    a, b = model_state(tmp_path / "cut" / "learner.pkl"), model_state(tmp_path / "eager" / "learner.pkl")
    assert a.keys() == b.keys() and all(torch.allclose(a[k].float(), b[k].float(), atol=1e-5) for k in a)
    with pytest.raises(ValueError, match="unknown compile mode 'fast'; choose one of default, reduce-overhead"):
        TrainConfig(compile="fast")
