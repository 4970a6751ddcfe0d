"""The baselines one `--loss` away from GR: each loss and gradient against a hand computation; MixUp with them."""

import json

import pytest
import torch
import torch.nn.functional as F
from fastgr.cli import app
from typer.testing import CliRunner

from fastgr import TrainConfig, gr_gradient
from fastgr.losses import GCELoss, SCELoss, baseline_loss

runner = CliRunner()


@pytest.fixture
def batch():
    g = torch.Generator().manual_seed(3)
    return torch.randn(6, 4, generator=g, dtype=torch.float64) * 2, torch.tensor([0, 1, 2, 3, 0, 1])


def test_gce_is_its_formula_and_its_gradient_is_grs_identity_case(batch):
    z, y = batch
    p_y = torch.softmax(z, 1)[torch.arange(6), y]
    zz = z.clone().requires_grad_(True)
    loss = GCELoss(q=0.7)(zz, y)
    torch.testing.assert_close(loss, ((1 - p_y**0.7) / 0.7).mean())
    loss.backward()
    expected = gr_gradient(z, y, lam=0.7, beta=2.0, transform="identity", normalize="mean", eps=0.0)
    torch.testing.assert_close(zz.grad, expected, rtol=1e-10, atol=1e-12)


def test_sce_is_alpha_ce_plus_beta_times_four_one_minus_p(batch):
    z, y = batch
    p_y = torch.softmax(z, 1)[torch.arange(6), y]
    by_hand = 0.1 * -torch.log(p_y) + 1.0 * 4 * (1 - p_y)
    torch.testing.assert_close(SCELoss()(z, y), by_hand.mean())
    assert SCELoss(reduction="none")(z, y).shape == (6,)


def test_label_smoothing_is_fastais_at_0_1(batch):
    z, y = batch
    logp = torch.log_softmax(z.float(), 1)
    by_hand = (0.9 * F.nll_loss(logp, y) + 0.1 * -logp.mean(1).mean())
    torch.testing.assert_close(baseline_loss("ls")(z.float(), y), by_hand)
    with pytest.raises(ValueError, match="unknown baseline loss 'mae'"):
        baseline_loss("mae")


def test_each_baseline_and_mixup_train_through_the_command(tmp_path, image_folder):
    args = [str(image_folder), "--noise", "0.25", "--epochs", "1", "--img-size", "8", "--bs", "16"]
    for loss in ("ls", "gce", "sce"):
        out = tmp_path / loss
        r = runner.invoke(app, ["train", *args, "--loss", loss, "--out", str(out)])
        assert r.exit_code == 0, r.output
        summary = json.loads((out / "summary.json").read_text())
        assert summary["loss"] == loss and summary["lam"] is None and 0 <= summary["test_accuracy_final"] <= 1
    out = tmp_path / "mixup"
    r = runner.invoke(app, ["train", *args, "--loss", "ce", "--mixup", "0.2", "--out", str(out)])
    assert r.exit_code == 0, r.output
    from fastai.callback.mixup import MixUp
    from fastai.learner import load_learner

    assert any(isinstance(cb, MixUp) for cb in load_learner(out / "learner.pkl").cbs)
    r = runner.invoke(app, ["train", *args, "--mixup", "0.2", "--out", str(tmp_path / "gr_mixup")])
    assert r.exit_code == 1 and "GR with MixUp is refused" in r.stderr
    with pytest.raises(ValueError, match="mixup is MixUp's alpha, >= 0"):
        TrainConfig(loss="ce", mixup=-1)
