"""`gr_learner`, the one builder of the learners of runs, benchmarks and notebooks; the CLI's single source of
defaults."""

import ast
from pathlib import Path

import pytest
import torch
from fastai.callback.fp16 import MixedPrecision

from fastgr import GRCallback, TrainConfig, gr_learner, load_data, make_dataloaders
from fastgr.learner import SeedEpoch
from fastgr.telemetry import FitMonitor

ROOT = Path(__file__).parents[1]


@pytest.fixture(scope="module")
def dls():
    return make_dataloaders(load_data("digits", img_size=8), bs=64)


def test_gr_learner_puts_a_run_together(dls):
    learn = gr_learner(dls, "cifar_resnet20", lam=1.0, beta=16.0, warmup=0.5, true_labels=dls.train.y)
    gr = next(cb for cb in learn.cbs if isinstance(cb, GRCallback))
    assert (gr.lam, gr.beta, gr.warmup, gr.warmup_mode) == (1.0, 16.0, 0.5, "blend")
    assert any(isinstance(cb, FitMonitor) for cb in learn.cbs) and any(isinstance(cb, SeedEpoch) for cb in learn.cbs)
    assert learn.model.stem[0].in_channels == 1 and learn.model.fc.out_features == 10  # from the data
    assert learn.wd == 5e-4 and learn.lr == 0.1 and not learn.wd_bn_bias
    assert [m.name for m in learn.metrics] == ["test_acc"]
    ce = gr_learner(dls, torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 10)), loss="ce")
    assert not any(isinstance(cb, (GRCallback, MixedPrecision)) for cb in ce.cbs)
    assert next(cb for cb in ce.cbs if isinstance(cb, FitMonitor)).columns == ("train_acc_given",)
    with pytest.raises(ValueError, match="amp .* needs a CUDA device"):
        gr_learner(dls, "cifar_resnet20", amp=True)
    with pytest.raises(ValueError, match="unknown loss 'mae'"):
        gr_learner(dls, "cifar_resnet20", loss="mae")


def test_a_resumed_fit_draws_the_batches_of_its_epochs(dls):
    "SeedEpoch: epoch e's batches are those of (seed, e), however the fit got there."
    seen = {}

    class Keep(SeedEpoch):
        order = 50

        def after_batch(self):
            if self.training:
                seen.setdefault(self.epoch, []).append(self.learn.dl.batch_idx.clone())

    learn = gr_learner(dls, "cifar_resnet20", loss="ce", cbs=[Keep()])
    with learn.no_bar(), learn.no_logging():
        learn.fit_one_cycle(2)
        first = {e: torch.cat(v) for e, v in seen.items()}
        seen.clear()
        learn.fit_one_cycle(2, start_epoch=1)  # fastai's resume: epoch 0 skipped
    assert list(seen) == [1] and torch.equal(torch.cat(seen[1]), first[1])
    assert not torch.equal(first[0], first[1])


def test_no_bench_script_imports_a_private_name():
    for path in sorted((ROOT / "bench").glob("*.py")):
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("fastgr"):
                private = [a.name for a in node.names if a.name.startswith("_")]
                assert not private, f"{path.name} imports {private} from {node.module}"


def test_the_cli_defaults_are_the_librarys(monkeypatch):
    from fastgr.cli import app
    from typer.testing import CliRunner

    import fastgr.experiment
    import fastgr.tuning

    got = []
    monkeypatch.setattr(fastgr.experiment, "train_run", lambda cfg, *a, **k: got.append(cfg) or {})
    monkeypatch.setattr(fastgr.tuning, "tune_run", lambda cfg, *a, **k: got.append(cfg) or {})
    runner = CliRunner()
    runner.invoke(app, ["train"])
    runner.invoke(app, ["tune"])
    assert got == [TrainConfig(), TrainConfig()]
    # each option reaches its field
    runner.invoke(app, ["train", "--lam", "1", "--beta", "16", "--warmup", "0.2", "--noise-type", "pairflip",
                        "--augment", "crop", "--classes", "a,b", "--loss", "ce", "--holdout-is-not-train"])
    runner.invoke(app, ["train", "--lam", "1", "--beta", "16", "--warmup", "0.2", "--noise-type", "pairflip",
                        "--augment", "crop", "--classes", "a,b", "--loss", "ce"])
    runner.invoke(app, ["tune", "--holdout", "0.3", "--epochs", "3"])
    assert got[2:] == [TrainConfig(lam=1.0, beta=16.0, warmup=0.2, noise_type="pairflip", augment="crop",
                                   classes=("a", "b"), loss="ce"), TrainConfig(tune_holdout=0.3, epochs=3)]


def test_train_config_is_checked_when_made():
    with pytest.raises(ValueError, match="lr must be a finite number"):
        TrainConfig(lr=float("inf"))
    with pytest.raises(ValueError, match="unknown loss 'mae'"):
        TrainConfig(loss="mae")
    with pytest.raises(ValueError, match="noise rate must be in"):
        TrainConfig().replace(noise=1.5)
    assert TrainConfig(classes=["a", "b"]).classes == ("a", "b")


def test_validate_and_get_preds_keep_the_learners_own_metrics(dls):
    "The per-epoch columns belong to fit only: fastai's state, not the call stack, tells (telemetry.is_fitting)."
    learn = gr_learner(dls, "cifar_resnet20", true_labels=dls.train.y)
    with learn.no_bar(), learn.no_logging():
        learn.fit_one_cycle(1)
        assert {"gr_ess", "train_acc_given"} <= set(learn.recorder.metric_names)
        assert len(learn.validate()) == 2  # valid loss, test_acc
        probs, _ = learn.get_preds()
    assert probs.shape == (len(dls.valid.y), 10)
    assert [m.name for m in learn.metrics] == ["test_acc"]
