"""GRCallback inside fastai: the exact update it causes, its telemetry, composition, refusals, and that it helps."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from fastai.callback.core import Callback
from fastai.callback.fp16 import MixedPrecision
from fastai.callback.mixup import CutMix, MixUp
from fastai.callback.training import GradientAccumulation
from fastai.data.core import DataLoaders
from fastai.data.load import DataLoader
from fastai.learner import Learner
from fastai.losses import BCEWithLogitsLossFlat, CrossEntropyLossFlat
from fastai.optimizer import SGD, Adam
from torch import nn

from fastgr import EmphasisMonitor, GRCallback, effective_sample_size, emphasis_spread, gr_gradient, gr_terms
from fastgr.noise import symmetric_noise


def linear_problem(n=16, d=5, c=4, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, d, generator=g)
    y = torch.randint(0, c, (n,), generator=g)
    return x, y


def make_learner(x, y, bs, cbs=(), shuffle=False, c=4, loss_func=None, lr=0.1, seed=0):
    torch.manual_seed(seed)
    model = nn.Linear(x.shape[1], c)
    train = DataLoader(list(zip(x, y)), bs=bs, shuffle=shuffle, drop_last=False)
    valid = DataLoader(list(zip(x, y)), bs=bs)
    learn = Learner(DataLoaders(train, valid), model, loss_func=loss_func or CrossEntropyLossFlat(),
                    opt_func=lambda p, lr: SGD(p, lr, mom=0.0, wd=0.0), lr=lr, cbs=list(cbs))
    return learn


class Grab(Callback):
    "Keeps what each training step saw: logits, loss, parameter gradients before the step."

    order = 100
    run_valid = False

    def before_fit(self):
        self.logits, self.losses, self.grads = [], [], []

    def after_loss(self):
        self.logits.append(self.learn.pred.detach().float().clone())
        self.losses.append(self.learn.loss.detach().float().clone())

    def before_step(self):
        self.grads.append([p.grad.detach().clone() for p in self.learn.model.parameters()])


def fit(learn, epochs=1, lr=0.1):
    with learn.no_bar(), learn.no_logging():
        learn.fit(epochs, lr)


def test_one_sgd_step_moves_weights_by_minus_lr_GtX():
    x, y = linear_problem()
    grab = Grab()
    learn = make_learner(x, y, bs=16, cbs=[GRCallback(lam=1, beta=16), grab])
    W0, b0 = learn.model.weight.detach().clone(), learn.model.bias.detach().clone()
    fit(learn, lr=0.1)
    logits = x @ W0.T + b0
    G = gr_gradient(logits, y, lam=1, beta=16)
    torch.testing.assert_close(grab.logits[0], logits)
    torch.testing.assert_close(learn.model.weight.detach(), W0 - 0.1 * G.T @ x, rtol=0, atol=1e-6)
    torch.testing.assert_close(learn.model.bias.detach(), b0 - 0.1 * G.sum(0), rtol=0, atol=1e-6)
    # different from what plain cross-entropy would have done
    ce_grad = torch.autograd.functional.jacobian(lambda z: F.cross_entropy(z, y), logits)
    assert (ce_grad.T @ x - G.T @ x).abs().max() > 1e-3
    # the logged loss is the learner's own cross-entropy, not the surrogate
    assert grab.losses[0].item() == pytest.approx(F.cross_entropy(logits, y).item(), rel=1e-6)
    assert learn.recorder.losses[0].item() == pytest.approx(F.cross_entropy(logits, y).item(), rel=1e-5)


def test_telemetry_columns_hold_the_epoch_means():
    x, y = linear_problem(n=24)
    grab = Grab()
    gr = EmphasisMonitor()  # the columns of GR's weights
    learn = make_learner(x, y, bs=8, cbs=[GRCallback(lam=0.5, beta=8), gr, grab])
    user_metrics = list(learn.metrics)
    fit(learn, epochs=2)
    names = learn.recorder.metric_names
    assert names[:3] == ["epoch", "train_loss", "valid_loss"]
    assert {"gr_spread", "gr_ess", "gr_mean_p"} <= set(names)
    # epoch 2's values, recomputed from the logits its three batches produced
    logits, ys = grab.logits[3:], y.split(8)
    w = [gr_terms(z, t, 0.5, 8).weight for z, t in zip(logits, ys)]
    spread = np.mean([emphasis_spread(v).item() for v in w])
    ess = np.mean([effective_sample_size(v).item() for v in w])
    mean_p = torch.cat([torch.softmax(z, 1)[torch.arange(8), t] for z, t in zip(logits, ys)]).mean().item()
    row = dict(zip(names[1:], learn.recorder.values[-1]))
    assert row["gr_spread"] == pytest.approx(spread, rel=1e-5)
    assert row["gr_ess"] == pytest.approx(ess, rel=1e-5)
    assert row["gr_mean_p"] == pytest.approx(mean_p, rel=1e-5)
    assert 0 < row["gr_ess"] <= 1 and row["gr_spread"] > 0
    assert [h["epoch"] for h in gr.history] == [0, 1]
    # the learner's own metrics are back after fit
    assert list(learn.metrics) == user_metrics


def test_the_monitor_changes_no_gradient():
    "GR with its EmphasisMonitor (columns, collapse rule, examples) trains the same weights as GR alone."
    x, y = linear_problem(n=32)
    alone = make_learner(x, y, bs=8, cbs=[GRCallback(lam=1, beta=16)])
    watched = make_learner(x, y, bs=8, cbs=[GRCallback(lam=1, beta=16), EmphasisMonitor(record_examples=True)])
    fit(alone, epochs=3)
    fit(watched, epochs=3)
    assert torch.equal(alone.model.weight, watched.model.weight) and torch.equal(alone.model.bias, watched.model.bias)
    assert len(watched.emphasis_monitor.history) == 3 and not hasattr(alone, "emphasis_monitor")


def test_records_every_training_example_of_the_last_epoch_with_its_dataset_index():
    x, y = linear_problem(n=40)
    gr = EmphasisMonitor(record_examples=True)
    learn = make_learner(x, y, bs=8, cbs=[GRCallback(), gr], shuffle=True)
    fit(learn, epochs=2)
    ex = gr.examples
    assert sorted(ex["idx"].tolist()) == list(range(40))  # each example once, shuffled order resolved
    assert (ex["label"].to_numpy() == y.numpy()[ex["idx"].to_numpy()]).all()
    assert ((ex["p"] > 0) & (ex["p"] < 1)).all()
    # weights are relative to the batch: each batch of 8 averages to 1
    assert np.allclose(ex["weight"].to_numpy().reshape(5, 8).mean(1), 1.0, atol=1e-5)


class CPUMixedPrecision(MixedPrecision):
    "fastai's MixedPrecision with the CPU's bf16 autocast and an enabled (CPU) GradScaler."

    def before_fit(self):
        super().before_fit()
        self.autocast = torch.autocast("cpu", dtype=torch.bfloat16)
        self.learn.scaler = torch.amp.GradScaler("cpu", init_scale=1024.0)


def test_composes_with_mixed_precision():
    x, y = linear_problem(n=32, d=8)

    class GradAfterBackward(Callback):
        order = 100
        run_valid = False

        def after_backward(self):
            self.grad = self.learn.model.weight.grad.detach().clone()

    grab, after = Grab(), GradAfterBackward()
    learn = make_learner(x, y, bs=32, cbs=[GRCallback(lam=1, beta=16), CPUMixedPrecision(amp_mode="bf16"),
                                           grab, after])
    W0 = learn.model.weight.detach().clone()
    fit(learn, lr=0.1)
    # the forward really ran in bf16: its logits carry bf16 rounding
    exact = x @ W0.T + learn.model.bias.detach()
    assert 1e-4 < (grab.logits[0] - exact).abs().max() < 0.1
    G = gr_gradient(grab.logits[0], y, lam=1, beta=16)
    expected = G.T @ x
    # at backward the gradient carries the GradScaler's scale; after unscaling it is G^T X (bf16 matmul)
    torch.testing.assert_close(after.grad / 1024.0, expected, rtol=2e-2, atol=2e-3)
    torch.testing.assert_close(grab.grads[0][0], expected, rtol=2e-2, atol=2e-3)
    torch.testing.assert_close(learn.model.weight.detach(), W0 - 0.1 * grab.grads[0][0], rtol=0, atol=1e-6)
    assert learn.model.weight.dtype == torch.float32


@pytest.mark.parametrize("normalize", ["mean", "sum"])
def test_composes_with_gradient_accumulation(normalize):
    x, y = linear_problem(n=16)
    grab = Grab()
    learn = make_learner(x, y, bs=4, cbs=[GRCallback(lam=1, beta=4, normalize=normalize),
                                          GradientAccumulation(n_acc=16), grab])
    W0, b0 = learn.model.weight.detach().clone(), learn.model.bias.detach().clone()
    fit(learn, lr=0.5)
    assert len(grab.grads) == 1  # four micro-batches, one step
    logits = x @ W0.T + b0
    if normalize == "mean":
        # one example's share does not depend on its batch: accumulation gives the full batch's gradient
        expected = gr_gradient(logits, y, 1, 4, normalize="mean").T @ x
    else:
        # weights are normalised within each micro-batch, and GradientAccumulation averages micro-batches
        expected = sum(gr_gradient(z, t, 1, 4).T @ xx for z, t, xx in
                       zip(logits.split(4), y.split(4), x.split(4))) / 4
    torch.testing.assert_close(grab.grads[0][0], expected, rtol=0, atol=1e-6)
    torch.testing.assert_close(learn.model.weight.detach(), W0 - 0.5 * expected, rtol=0, atol=1e-6)


def test_refuses_mixup_and_cutmix():
    x, y = linear_problem()
    for mixer in (MixUp(), CutMix()):
        learn = make_learner(x, y, bs=8, cbs=[GRCallback(), mixer])
        with pytest.raises(ValueError, match=f"cannot train with {type(mixer).__name__}.*soft targets"):
            fit(learn)


def test_refuses_soft_and_multilabel_targets():
    x, _ = linear_problem()
    multi = (torch.rand(16, 4) > 0.5).float()
    learn = make_learner(x, multi, bs=8, cbs=[GRCallback()], loss_func=BCEWithLogitsLossFlat())
    with pytest.raises(TypeError, match="soft or multi-label targets"):
        fit(learn)


def test_refuses_one_class_and_labels_out_of_range():
    x, y = linear_problem()
    learn = make_learner(x, torch.zeros(16, dtype=torch.long), bs=8, c=1, cbs=[GRCallback()],
                         loss_func=lambda z, t: z.mean())
    with pytest.raises(ValueError, match="class axis .* has size 1"):
        fit(learn)
    # a loss that does not check labels itself: GR does
    learn = make_learner(x, y + 4, bs=8, cbs=[GRCallback()], loss_func=lambda z, t: z.mean())
    with pytest.raises(ValueError, match=r"label \d+ is outside \[0, 4\)"):
        fit(learn)


def test_refuses_non_float_predictions():
    x, y = linear_problem()

    class IntModel(nn.Module):
        def __init__(self):
            super().__init__()
            self.lin = nn.Linear(5, 4)

        def forward(self, x):
            return self.lin(x).round().long()

    learn = make_learner(x, y, bs=8, cbs=[GRCallback()], loss_func=lambda z, t: z.float().mean())
    learn.model = IntModel()
    with pytest.raises(TypeError, match="floating-point predictions"):
        fit(learn)


@pytest.mark.parametrize("kwargs, match", [
    (dict(lam=-1), "lam must be"), (dict(beta=-0.5), "beta must be"),
    (dict(transform="tanh"), "unknown transform"), (dict(normalize="max"), "unknown normalize"),
])
def test_refuses_bad_settings_at_construction(kwargs, match):
    with pytest.raises(ValueError, match=match):
        GRCallback(**kwargs)


def blobs(seed, n, d=20, c=10):
    g = torch.Generator().manual_seed(100 + seed)
    mu = torch.randn(c, d, generator=torch.Generator().manual_seed(7))
    y = torch.randint(0, c, (n,), generator=g)
    return mu[y] + torch.randn(n, d, generator=g), y


def train_mlp(x, y, cbs, epochs=40, seed=0):
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Linear(20, 256), nn.ReLU(), nn.Linear(256, 256), nn.ReLU(), nn.Linear(256, 10))
    train = DataLoader(list(zip(x, y)), bs=64, shuffle=True, drop_last=True)
    train.rng.seed(seed)
    learn = Learner(DataLoaders(train, DataLoader(list(zip(x, y)), bs=512)), model,
                    loss_func=CrossEntropyLossFlat(), opt_func=Adam, cbs=cbs)
    fit(learn, epochs=epochs, lr=3e-3)
    return model


def test_gr_beats_cross_entropy_under_40pct_symmetric_noise():
    """An over-parameterised MLP memorises 40% wrong labels with CE; GR keeps the clean test accuracy."""
    x, y = blobs(0, 1000)
    xt, yt = blobs(1, 2000)
    noisy = torch.as_tensor(symmetric_noise(y.numpy(), 0.4, 10, seed=0).given)
    acc = {}
    for name, cbs in (("ce", []), ("gr", [GRCallback(lam=1, beta=16)])):
        model = train_mlp(x, noisy, cbs)
        with torch.no_grad():
            acc[name] = (model(xt).argmax(1) == yt).float().mean().item()
            acc[name + "_fit"] = (model(x).argmax(1) == noisy).float().mean().item()
    assert acc["ce_fit"] > 0.95  # CE memorised the wrong labels...
    assert acc["gr_fit"] < 0.75  # ...GR did not
    assert acc["gr"] >= acc["ce"] + 0.10, acc


def test_validate_after_fit_returns_only_the_learners_own_metrics():
    from fastai.metrics import accuracy

    x, y = linear_problem(n=24)
    gr = EmphasisMonitor()
    learn = make_learner(x, y, bs=8, cbs=[GRCallback(), gr])
    learn.metrics = [accuracy]
    fit(learn, epochs=2)
    history = list(gr.history)
    res = learn.validate()
    assert len(res) == 2 and all(v is not None for v in res)
    assert gr.history == history  # validation is not a training epoch
    assert "gr_spread" not in learn.recorder.metric_names  # the columns belong to fits only
