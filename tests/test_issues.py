"""Label issues: per-example training dynamics (AUM, late p) and the report of the labels most likely wrong."""

import json
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
import torch
from fastgr.cli import app
from typer.testing import CliRunner

from fastgr import TrainConfig, train_run
from fastgr.dynamics import TrainingDynamics, label_margin
from fastgr.issues import estimated_noise_rate, flag_cut, issue_auroc, rank_label_issues
from tests.conftest import make_image_folder
from tests.test_callback import Grab, fit, make_learner
from tests.test_performance import CountOps


class Seen(Grab):
    "Grab, plus the dataset indices and the epoch of every training step."

    def before_fit(self):
        super().before_fit()
        self.steps = []

    def after_loss(self):
        super().after_loss()
        from fastgr.telemetry import batch_indices

        self.steps.append((self.epoch, batch_indices(self.dl, self.iter, len(self.yb[0])).clone(),
                           self.yb[0].clone()))


def test_aum_and_late_p_equal_a_hand_computation():
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(40, 5, generator=g), torch.randint(0, 4, (40,), generator=g)
    dyn, seen = TrainingDynamics(40, window=2), Seen()
    learn = make_learner(x, y, bs=16, cbs=[dyn, seen], shuffle=True)
    fit(learn, epochs=3, lr=0.5)
    margin, steps, late_p, late_n = torch.zeros(40), torch.zeros(40), torch.zeros(40), torch.zeros(40)
    for z, (epoch, idx, t) in zip(seen.logits, seen.steps):
        own = z[torch.arange(len(t)), t]
        other = torch.stack([torch.cat([z[i, :t[i]], z[i, t[i] + 1:]]).max() for i in range(len(t))])
        for i, m, p in zip(idx.tolist(), (own - other).tolist(), torch.softmax(z, 1)[torch.arange(len(t)), t]):
            margin[i] += m
            steps[i] += 1
            if epoch >= 1:  # the last 2 of 3 epochs
                late_p[i] += p
                late_n[i] += 1
    aum, mean_p = dyn.values()
    assert steps.min() == 3  # every example, every epoch
    torch.testing.assert_close(aum, margin / steps, rtol=0, atol=1e-5)
    torch.testing.assert_close(mean_p, late_p / late_n, rtol=0, atol=1e-6)
    assert label_margin(torch.tensor([[2.0, 5.0, 1.0]]), torch.tensor([0])).item() == -3.0


def test_recording_reads_nothing_back_from_the_device():
    dyn = TrainingDynamics(64)
    z, y = torch.randn(32, 10), torch.randint(0, 10, (32,))
    dyn.learn = SimpleNamespace(pred=z, yb=(y,), training=True, iter=0, cbs=[],
                                dl=SimpleNamespace(batch_idx=torch.randperm(64)[:32]))
    dyn._on, dyn._late = True, True
    with CountOps() as counter:
        dyn.after_loss()
    assert not [op for op in counter.ops if "local_scalar_dense" in op]
    assert dyn.sums[1].sum() == 32 and dyn.sums[3].sum() == 32


def test_examples_a_loader_cannot_name_add_nothing_and_need_no_count():
    dyn = TrainingDynamics(8)
    z, y = torch.randn(4, 3), torch.tensor([0, 1, 2, 0])
    dyn.learn = SimpleNamespace(pred=z, yb=(y,), training=True, iter=0, cbs=[],
                                dl=SimpleNamespace(batch_idx=torch.tensor([5, -1, 2, -1])))
    dyn._on, dyn._late = True, True
    with CountOps() as counter:
        dyn.after_loss()
    assert not [op for op in counter.ops if "nonzero" in op or "local_scalar_dense" in op]  # syncs on a GPU
    aum, mean_p = dyn.values()
    seen = torch.tensor([False, False, True, False, False, True, False, False])
    assert torch.isnan(aum[~seen]).all() and torch.isnan(mean_p[~seen]).all()
    torch.testing.assert_close(aum[[2, 5]], label_margin(z[[2, 0]], y[[2, 0]]))


def test_rank_label_issues_orders_and_suggests():
    probs = np.array([[0.9, 0.1], [0.2, 0.8], [0.6, 0.4]])
    f = rank_label_issues(np.array([0, 0, 1]), probs, np.array([3.0, -2.0, np.nan]), np.array([0.9, 0.2, np.nan]),
                          ["a", "b", "c"], ["cat", "dog"], true=np.array([0, 1, 0]))
    assert f["item"].tolist() == ["b", "c", "a"]  # most negative margin first; never trained on: 0.5
    assert f["suggested_label"].tolist() == ["dog", "cat", "dog"]
    assert f["flagged"].tolist() == [True, False, False]
    assert f["model_label"].tolist() == ["dog", "cat", "cat"]  # what --correct relabels to where it differs
    assert f["score"].round(4).tolist() == [round(1 / (1 + np.exp(-2.0)), 4), 0.5, round(1 / (1 + np.exp(3)), 4)]
    assert issue_auroc(f["score"], f["is_wrong"]) == 1.0
    assert issue_auroc(np.array([0.1, 0.9]), np.array([True, False])) == 0.0


def planted_margins(rate: float, n: int = 4000, weak: bool = False, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """AUMs shaped as a GR run's: wrong labels' and right labels' margins well apart (digits), or, from a weak run
    (`weak`), two wide components that overlap around 0, as the mixture fitted to CIFAR-5k 40%'s margins (means
    -3.5 and 2.2, deviations 2.2): there a sixth of the right labels have a margin below 0."""
    rng = np.random.default_rng(seed)
    wrong = rng.random(n) < rate
    (mw, sw), (mr, sr) = ((-3.5, 2.2), (2.2, 2.2)) if weak else ((-7.0, 2.0), (7.0, 2.0))
    return np.where(wrong, rng.normal(mw, sw, n), rng.normal(mr, sr, n)), wrong


@pytest.mark.parametrize("rate", [0.2, 0.4])
def test_the_noise_estimate_leaves_out_right_labels_a_weak_run_could_not_fit(rate):
    # the planted wrong labels' share within 0.03 (the issue's target for the estimate), where AUM < 0 alone
    # counts the unfitted right labels too (6 to 10 points more here)
    for weak in (False, True):
        aum, wrong = planted_margins(rate, weak=weak)
        assert abs(estimated_noise_rate(aum) - wrong.mean()) < 0.03, (rate, weak)
    aum, wrong = planted_margins(rate, weak=True)
    assert (aum < 0).mean() - wrong.mean() > 0.05
    assert flag_cut(aum) < -0.5  # between the two components, not at 0


def test_the_noise_estimate_never_flags_more_than_a_margin_below_zero():
    rng = np.random.default_rng(1)
    clean = rng.normal(4.0, 2.0, 3000)  # one component, a tail below 0: nothing for a mixture to split off
    assert flag_cut(clean) == 0.0 and estimated_noise_rate(clean) == (clean < 0).mean()
    for _ in range(5):  # random mixtures of three components
        aum = np.concatenate([rng.normal(rng.uniform(-5, 5), rng.uniform(0.5, 3), 500) for _ in range(3)])
        assert flag_cut(aum) <= 0.0 and estimated_noise_rate(aum) <= (aum < 0).mean()
    # too few margins for a mixture, every margin above 0, margins never recorded (NaN): the cut stays at 0
    assert flag_cut(np.array([-3.0, -2.0, 4.0] * 10)) == 0.0 and flag_cut(np.abs(clean)) == 0.0
    with_nan = np.concatenate([planted_margins(0.4, weak=True)[0], [np.nan] * 50])
    assert flag_cut(with_nan) == flag_cut(with_nan[:-50]) < 0


@pytest.fixture(scope="module")
def digits_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("issues") / "gr"
    train_run(TrainConfig(epochs=20), out)  # digits, 40% symmetric noise
    return out


def test_one_gr_run_ranks_the_planted_wrong_labels_first(digits_run):
    f = pd.read_csv(digits_run / "label_issues.csv")
    labels = pd.read_csv(digits_run / "labels.csv")
    assert len(f) == len(labels) and f["item"].is_unique
    assert {"item", "given_label", "suggested_label", "score"} <= set(f.columns)
    assert f["score"].is_monotonic_decreasing
    wrong = f["is_wrong"].to_numpy(bool)
    assert issue_auroc(f["score"], wrong) > 0.99
    assert abs(f["flagged"].mean() - wrong.mean()) < 0.04  # the estimate of the noise rate, no clean labels used
    assert wrong[f["flagged"].to_numpy(bool)].mean() > 0.98
    # where the model corrects a flagged label, it mostly names the true one
    hit = f[f["flagged"] & f["is_wrong"]]
    assert (hit["suggested_label"] == hit["true_label"]).mean() > 0.9


def test_a_run_at_another_noise_rate_estimates_it_too(tmp_path):
    train_run(TrainConfig(epochs=20, noise=0.2), tmp_path / "gr")  # digits, 20% symmetric noise
    f = pd.read_csv(tmp_path / "gr" / "label_issues.csv")
    wrong = f["is_wrong"].to_numpy(bool)
    assert abs(f["flagged"].mean() - wrong.mean()) < 0.04  # as at 40% (above)
    assert wrong[f["flagged"].to_numpy(bool)].mean() > 0.95


def test_fastgr_issues_prints_the_suspects_and_draws_them(digits_run):
    r = CliRunner().invoke(app, ["issues", str(digits_run), "--top", "10"])
    assert r.exit_code == 0, r.output
    assert "estimated_noise_rate" in r.output and "auroc" in r.output
    top = pd.read_csv(digits_run / "label_issues.csv").head(10)
    assert all(item in r.output for item in top["item"])
    assert (digits_run / "label_issues.png").stat().st_size > 1000


def test_a_folder_run_without_truth_ranks_its_files(tmp_path, monkeypatch):
    root = make_image_folder(tmp_path / "imgs", per_class=12, held_out=4, size=8)
    out = tmp_path / "run"
    train_run(TrainConfig(data=str(root), epochs=2, bs=8, loss="ce"), out)  # cross-entropy records them too
    f = pd.read_csv(out / "label_issues.csv")
    assert "is_wrong" not in f and len(f) == 36
    assert all((root / "train").joinpath(*p.split("/")[-2:]).exists() for p in f["item"])
    assert np.isfinite(f["aum"]).all()
    # the suspects' pictures are their files, read again: the folder is not listed and verified a second time
    import fastgr.data
    from fastgr.issues import suspect_images

    def no_listing(*a, **k):
        raise AssertionError("load_data called")

    monkeypatch.setattr(fastgr.data, "load_data", no_listing)
    # two epochs of 36 pictures learn nothing (held-out accuracy at chance): --force ranks them all the same
    r = CliRunner().invoke(app, ["issues", str(out), "--top", "5", "--force"])
    assert r.exit_code == 0, r.output
    assert "unknown" in r.output and (out / "label_issues.png").exists()
    top = f.head(2)
    pics = suspect_images(out, top["index"].tolist(), top["item"].tolist())
    want, _ = fastgr.data.decode_files([root / i for i in top["item"]], 8, 3)
    assert pics.shape == (2, 8, 8, 3) and (pics == np.stack(want).transpose(0, 2, 3, 1)).all()
    assert json.loads((out / "config.json").read_text())["config"]["loss"] == "ce"


def test_issues_on_a_folder_that_is_not_a_run_is_one_line(tmp_path):
    r = CliRunner().invoke(app, ["issues", str(tmp_path)])
    assert r.exit_code == 1
    assert "no label_issues.csv" in r.output and len(r.output.strip().splitlines()) == 1


def test_a_cleanlab_fold_cut_at_an_epoch_goes_on_to_the_same_probabilities(tmp_path, monkeypatch):
    "bench/label_issues.py's folds train for hours on CIFAR: one cut at a session's end resumes from its checkpoint."
    import sys
    from pathlib import Path

    monkeypatch.syspath_prepend(str(Path(__file__).parents[1] / "bench"))
    sys.modules.pop("label_issues", None)
    import label_issues

    from fastgr.training import RunLog

    cfg = TrainConfig(**{**label_issues._cases()["digits40"][1], "epochs": 3})
    whole, cut = tmp_path / "whole" / "fold1.npz", tmp_path / "cut" / "fold1.npz"
    label_issues.cv_fold(cfg, 1, whole)
    save = RunLog.save

    def save_then_cut(self, epoch):
        save(self, epoch)
        if epoch == 1:
            raise KeyboardInterrupt

    monkeypatch.setattr(RunLog, "save", save_then_cut)
    with pytest.raises(KeyboardInterrupt):
        label_issues.cv_fold(cfg, 1, cut)
    assert not cut.exists() and (tmp_path / "cut" / "fold1" / "checkpoint.pth").exists()
    monkeypatch.setattr(RunLog, "save", save)
    label_issues.cv_fold(cfg, 1, cut)
    a, b = np.load(whole), np.load(cut)
    assert np.array_equal(a["held"], b["held"]) and a["probs"].shape == (len(a["held"]), 10)
    assert np.array_equal(a["probs"], b["probs"])  # the epochs' draws and states restored: the same fold to the bit
    # and the same epoch of best accuracy on the fold's given labels, and its predictions (cleanlab's best checkpoint)
    assert int(a["best_epoch"]) == int(b["best_epoch"]) and np.array_equal(a["probs_best"], b["probs_best"])
    assert not (tmp_path / "cut" / "fold1").exists()  # its working folder goes with the result written


def test_a_run_that_learned_nothing_flags_nothing_unless_asked(tmp_path):
    """A run at chance (a learning rate too small to move the model) ranks nothing, relabels nothing: `issues`
    and `correct` say so in one line, `train --correct` skips the correction; --force asks for them anyway."""
    from fastgr.experiment import correct_run
    from fastgr.issues import above_chance, learning_verdict

    assert above_chance(0.14, 0.1, 360) and not above_chance(0.13, 0.1, 360)  # 2 SE of a guess: 0.0316
    balanced = np.arange(400) % 4  # chance 0.25: a GR fit of 0.6 (40% wrong labels left unfitted) is far above
    assert learning_verdict(0.9, 0.6, balanced, 100) is None
    assert "held-out accuracy is 0.300" in learning_verdict(0.3, 0.6, balanced, 100)  # 0.25 + 0.087 over 100
    # guessing the most frequent label is chance: 0.7 of labels that are 0.99 one class is nothing
    assert "fit of the given labels is 0.700" in learning_verdict(None, 0.7, np.array([0] + [1] * 99), 100)
    cfg = dict(data="digits", noise=0.4, epochs=1, img_size=8, lr=1e-6, loss="ce")
    out = tmp_path / "stuck"
    summary = train_run(TrainConfig(**cfg, correct=True), out)
    assert "not learned" in summary["correction_skipped"] and "test_accuracy_after_correction" not in summary
    assert not (out / "retrain").exists()
    r = CliRunner().invoke(app, ["issues", str(out)])
    assert r.exit_code == 1 and len(r.output.strip().splitlines()) == 1
    assert "has not learned: its held-out accuracy" in r.output and "--force" in r.output
    forced = CliRunner().invoke(app, ["issues", str(out), "--force", "--no-sheet"])
    assert forced.exit_code == 0 and "most likely wrong first" in forced.output
    with pytest.raises(ValueError, match="has not learned.*nothing relabelled"):
        correct_run(out)
    assert correct_run(out, force=True)["n"] == 1437
