"""Fine-tuning a pretrained timm backbone offline: weights the tests write, loaded through `--weights`; fastai's
body + head split, the head's epochs alone, discriminative rates, and GR's warm-up over the two fits."""

import json

import pandas as pd
import pytest
import timm
import torch
from fastgr.cli import app
from typer.testing import CliRunner

from fastgr import Reporter, TrainConfig, train_run
from tests.conftest import make_image_folder
from tests.test_cli import error_line
from tests.test_experiment import StopAfter, model_state, strip_seconds

ARCH = "test_resnet"  # timm's 0.47M-parameter test network: a real timm backbone, fast on a CPU


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("finetune")
    data = make_image_folder(root / "imgs", size=16, per_class=16, held_out=6)
    torch.manual_seed(1)
    backbone = timm.create_model(ARCH, num_classes=1000)  # "pretrained" for 1000 classes, as timm's would be
    torch.save(backbone.state_dict(), root / "backbone.pth")
    return data, root / "backbone.pth", backbone.state_dict()


def cfg(data, weights, **kw):
    return TrainConfig(**{**dict(data=str(data), arch=ARCH, weights=str(weights), epochs=2, bs=16, lr=0.05,
                                 noise=0.25, warmup=0.5), **kw})


def test_weights_load_into_fastais_body_with_a_new_head(setup):
    from fastgr.finetune import create_finetune_model

    data, path, state = setup
    model = create_finetune_model(ARCH, 3, 3, path)
    body = model[0].model.state_dict()
    assert set(body) == {k for k in state if not k.startswith("fc.")}  # timm's classifier dropped
    assert all(torch.equal(body[k], state[k]) for k in body)
    assert model(torch.randn(2, 3, 16, 16)).shape == (2, 3)  # fastai's head for 3 classes
    # safetensors too, and a grayscale task: timm adapts the RGB stem by summing its channels
    from safetensors.torch import save_file

    save_file(state, str(path.with_suffix(".safetensors")))
    gray = create_finetune_model(ARCH, 3, 1, path.with_suffix(".safetensors"))
    stem = [k for k in state if k.endswith(".weight") and state[k].ndim == 4][0]
    torch.testing.assert_close(gray[0].model.state_dict()[stem], state[stem].sum(1, keepdim=True))


def test_head_first_then_everything_with_discriminative_rates(setup):
    from fastai.callback.core import Callback

    from fastgr import gr_learner
    from fastgr.data import load_data
    from fastgr.dataloaders import make_dataloaders
    from fastgr.learner import fit_schedule
    from fastgr.schedule import training_span

    data, path, _ = setup
    dls = make_dataloaders(load_data(str(data)), bs=16)
    seen = []

    class Watch(Callback):
        def before_train(self):
            self.conv0 = self.model[0].model.conv1[0].weight.detach().clone()
            self.bn0 = self.model[0].model.bn1.weight.detach().clone()
            self.head0 = self.model[1][-1].weight.detach().clone()

        def after_batch(self):
            if self.training and self.iter == 0:
                self.lrs = [h["lr"] for h in self.opt.hypers]

        def after_train(self):
            m = self.model
            seen.append(dict(epoch=self.epoch + training_span(self.learn).offset, lrs=self.lrs,
                             progress=self.learn.gr.progress(),
                             conv=not torch.equal(m[0].model.conv1[0].weight, self.conv0),
                             bn=not torch.equal(m[0].model.bn1.weight, self.bn0),
                             head=not torch.equal(m[1][-1].weight, self.head0)))

    learn = gr_learner(dls, ARCH, weights=str(path), warmup=0.5, cbs=[Watch()])
    starts = []
    learn.gr.before_train = lambda: starts.append(learn.gr.progress())  # GR's warm-up at each epoch's start
    with learn.no_bar(), learn.no_logging():
        fit_schedule(learn, 2, 0.1, finetune=True, freeze_epochs=1)
    assert [s["epoch"] for s in seen] == [0, 1, 2]
    # the head's epoch: the body's convolutions frozen, its batch-norm and the head trained
    assert seen[0]["conv"] is False and seen[0]["bn"] and seen[0]["head"]
    assert seen[1]["conv"] and seen[2]["conv"]
    # then the body at 1/100 of the head's rate (fastai's fine_tune: slice(lr / 200, lr / 2))
    body, head = seen[1]["lrs"]
    assert body == pytest.approx(head / 100)
    # one warm-up over the three epochs of both fits: half of training, so 0, 2/3, then GR alone
    assert starts == pytest.approx([0.0, 2 / 3, 1.0])
    assert [h["epoch"] for h in learn.emphasis_monitor.history] == [0, 1, 2]
    assert not hasattr(learn, "training_span")  # a later fit is a training of its own


def test_finetune_run_resumes_across_the_two_fits(setup, tmp_path):
    data, path, _ = setup
    full = train_run(cfg(data, path), tmp_path / "full")
    rows = pd.read_csv(tmp_path / "full" / "metrics.csv")
    assert rows["epoch"].tolist() == [1, 2, 3]  # the head's epoch, then two of the whole model
    saved = json.loads((tmp_path / "full" / "config.json").read_text())["config"]
    assert saved["weights"] == str(path) and saved["freeze_epochs"] is None
    for stop in (1, 2):  # cut after the head's epoch, and inside the second fit
        out = tmp_path / f"cut{stop}"
        with pytest.raises(KeyboardInterrupt):
            train_run(cfg(data, path), out, reporter=StopAfter(stop))
        resumed = train_run(TrainConfig(), out, resume=True, reporter=Reporter())
        assert {k: v for k, v in resumed.items() if k != "seconds"} == {k: v for k, v in full.items() if k != "seconds"}
        pd.testing.assert_frame_equal(strip_seconds(pd.read_csv(out / "metrics.csv")), strip_seconds(rows))
        a, b = model_state(out / "learner.pkl"), model_state(tmp_path / "full" / "learner.pkl")
        assert all(torch.equal(a[k], b[k]) for k in a)


def test_bad_weights_are_named_before_anything_is_written(setup, tmp_path):
    from fastgr.finetune import create_finetune_model

    data, path, state = setup
    runner = CliRunner()
    base = ["train", str(data), "--epochs", "1", "--bs", "16"]
    cases = [
        (["--arch", "test_efficientnet", "--weights", str(path)], "does not fit test_efficientnet"),
        (["--arch", ARCH, "--weights", str(tmp_path / "none.pth")], "no such weights file"),
        (["--arch", ARCH, "--freeze-epochs", "2"], "needs --pretrained or --weights"),
    ]
    junk = tmp_path / "junk.pth"
    junk.write_bytes(b"not a checkpoint")
    cases.append((["--arch", ARCH, "--weights", str(junk)], "not a readable weights file"))
    # a whole fine-tuned model (body + head) for 5 classes, on 3-class data
    whole = tmp_path / "whole5.pth"
    torch.save(create_finetune_model(ARCH, 5, 3, path).state_dict(), whole)
    cases.append((["--arch", ARCH, "--weights", str(whole)], "is a model for 5 classes; the data has 3"))
    for extra, message in cases:
        out = tmp_path / "run"
        r = runner.invoke(app, [*base, *extra, "--out", str(out)])
        assert r.exit_code == 1, r.output
        assert message in error_line(r)
        assert not out.exists()
    # the same whole model for 3 classes loads, head included
    good = create_finetune_model(ARCH, 3, 3, path)
    torch.save(good.state_dict(), whole)
    again = create_finetune_model(ARCH, 3, 3, whole)
    assert all(torch.equal(a, b) for a, b in zip(again.state_dict().values(), good.state_dict().values()))


def test_finetune_run_compiled_splits_and_trains_as_eager(setup, tmp_path, monkeypatch):
    """`--compile` with fine-tuning: fastai's body/head split is taken from the model itself, not the compiled
    wrapper (which cannot be indexed), and the run ends as the eager one does (torch.compile's `eager` backend)."""
    real = torch.compile
    monkeypatch.setattr(torch, "compile", lambda model, mode=None, **kw: real(model, backend="eager"))
    data, path, _ = setup
    runs = [train_run(cfg(data, path, epochs=1, compile=mode), tmp_path / str(mode)) for mode in (None, "default")]
    assert runs[1]["test_accuracy_final"] == pytest.approx(runs[0]["test_accuracy_final"], abs=1e-6)
    a, b = (model_state(tmp_path / m / "learner.pkl") for m in ("None", "default"))
    assert a.keys() == b.keys() and all(torch.allclose(a[k].float(), b[k].float(), atol=1e-5) for k in a)
