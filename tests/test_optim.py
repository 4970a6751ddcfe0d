"""The training step's host-side cost: `ForeachSGD` is fastai's SGD to the bit, and nothing in a step of
`gr_learner`'s fit copies a tensor to the host (fastai's smoothed loss did, every step: a GPU sync)."""

import copy

import pytest
import torch
from fastai.callback.core import Callback
from fastai.learner import AvgSmoothLoss
from fastai.optimizer import SGD

from fastgr import gr_learner, load_data, make_dataloaders
from fastgr.models import create_model
from fastgr.optim import ForeachSGD
from fastgr.telemetry import DeviceSmoothLoss, SmoothLossOnDevice


def groups(model):
    ps = list(model.parameters())
    return [ps[:10], ps[10:]]


def train(opt, model, batches):
    for x, y in batches:
        torch.nn.functional.cross_entropy(model(x), y).backward()
        opt.step()
        opt.zero_grad()


def test_zero_grad_frees_the_gradients_and_an_idle_parameter_is_not_stepped_as_in_torchs_sgd():
    # None, not zeros: under CUDA graphs a kept gradient is the last replay's output memory, which the next replay
    # overwrites and torch refuses to add into (`--compile reduce-overhead` failed so on the first backward)
    torch.manual_seed(0)
    ref = torch.nn.Sequential(torch.nn.Linear(6, 5), torch.nn.Linear(5, 3))
    extra = torch.nn.Linear(6, 3)  # used by the first step only
    new, new_extra = copy.deepcopy(ref), copy.deepcopy(extra)
    theirs = torch.optim.SGD([*ref.parameters(), *extra.parameters()], lr=0.1, momentum=0.9, weight_decay=5e-4,
                             foreach=True)
    ours = ForeachSGD([*new.parameters(), *new_extra.parameters()], lr=0.1, mom=0.9, wd=5e-4)
    g = torch.Generator().manual_seed(1)
    batches = [(torch.randn(8, 6, generator=g), torch.randint(0, 3, (8,), generator=g)) for _ in range(3)]
    for step, (x, y) in enumerate(batches):
        for opt, m, e in ((theirs, ref, extra), (ours, new, new_extra)):
            out = m(x) + (e(x) if step == 0 else 0)
            torch.nn.functional.cross_entropy(out, y).backward()
            opt.step()
            opt.zero_grad()
            assert all(p.grad is None for p in [*m.parameters(), *e.parameters()])
        if step == 0:
            after_first = new_extra.weight.detach().clone()
    for a, b in zip([*ref.parameters(), *extra.parameters()], [*new.parameters(), *new_extra.parameters()]):
        torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-7)
    # the idle layer moved once (its first step), not again by momentum alone in the steps it had no gradient
    assert torch.equal(new_extra.weight, after_first)


def test_foreach_sgd_is_fastais_sgd_bit_for_bit_and_shares_its_state():
    torch.manual_seed(0)
    ref = create_model("cifar_resnet20", 10, 3)
    ref.stem[0].weight.requires_grad_(False)  # a frozen parameter: no gradient, no step, no state
    new = copy.deepcopy(ref)
    g = torch.Generator().manual_seed(1)
    batches = [(torch.randn(8, 3, 16, 16, generator=g), torch.randint(0, 10, (8,), generator=g)) for _ in range(4)]
    opts = []
    for model, make in ((ref, lambda p: SGD(p, lr=0.1, mom=0.9, wd=5e-4, decouple_wd=False)),
                        (new, lambda p: ForeachSGD(p, lr=0.1, mom=0.9, wd=5e-4))):
        opt = make(groups(model))
        for p in list(model.parameters())[::3]:
            opt.state[p]["do_wd"] = False  # as `wd_bn_bias=False` marks batch-norm and bias parameters
        opt.set_hyper("lr", [0.05, 0.1])  # discriminative rates
        opts.append(opt)
    train(opts[0], ref, batches[:2])
    train(opts[1], new, batches[:2])
    for a, b in zip(ref.parameters(), new.parameters()):
        assert torch.equal(a, b)
    assert "grad_avg" not in opts[1].state[new.stem[0].weight]
    # fastai's state dict loads into ForeachSGD (a checkpoint of an older run resumes), and training goes on alike
    moved = copy.deepcopy(ref)
    resumed = ForeachSGD(groups(moved), lr=0.1, mom=0.9, wd=5e-4)
    resumed.load_state_dict(copy.deepcopy(opts[0].state_dict()))
    train(opts[0], ref, batches[2:])
    train(resumed, moved, batches[2:])
    for a, b in zip(ref.parameters(), moved.parameters()):
        assert torch.equal(a, b)
    assert [sorted(s) for s in opts[0].state_dict()["state"]] == [sorted(s) for s in resumed.state_dict()["state"]]


class StepStart(Callback):
    "Opens a window at a training step's start (before every callback); `calls` records host copies in it."

    order = -1000

    def __init__(self):
        self.calls, self.active = [], False

    def before_batch(self):
        self.active = self.training


class StepEnd(Callback):
    "Closes the window after every callback's after_batch (the Recorder's included)."

    order = 10_000

    def __init__(self, window):
        self.window = window

    def after_batch(self):
        self.window.active = False


@pytest.fixture(scope="module")
def digits():
    return make_dataloaders(load_data("digits", img_size=8), bs=64)


def test_a_training_step_copies_nothing_to_the_host(digits, monkeypatch):
    """On a GPU each copy to the host waits for the device (measured: `bench/gr_overhead.py --sync-check`, fastai's
    smoothed loss did it every step). Here every callback of a full run's learner — GR, the fit of given and true
    labels, GR's examples, the label-issue dynamics, the Recorder — runs, and no step copies a tensor out."""
    window = StepStart()
    for name in ("cpu", "numpy", "tolist"):
        real = getattr(torch.Tensor, name)

        def spy(self, *args, _real=real, _name=name, **kwargs):
            if window.active:
                window.calls.append(_name)
            return _real(self, *args, **kwargs)

        monkeypatch.setattr(torch.Tensor, name, spy)
    learn = gr_learner(digits, "cifar_resnet20", true_labels=digits.train.y, record_examples=True,
                       record_dynamics=True, cbs=[window, StepEnd(window)])
    with learn.no_bar(), learn.no_logging():
        learn.fit(1, 0.05)
    assert window.calls == []
    # the check can fail: fastai's own smoothed loss copies the loss out at every step
    learn.remove_cb(next(cb for cb in learn.cbs if isinstance(cb, SmoothLossOnDevice)))
    learn.recorder.__dict__["smooth_loss"] = AvgSmoothLoss()
    with learn.no_bar(), learn.no_logging():
        learn.fit(1, 0.05)
    assert window.calls.count("cpu") >= len(digits.train)


def test_the_smoothed_loss_on_the_device_is_fastais(digits):
    "Same values as fastai's `AvgSmoothLoss`, on the host once an epoch ends (`plot_loss`, checkpoints)."
    runs = []
    for device_side in (True, False):
        torch.manual_seed(0)
        learn = gr_learner(digits, "cifar_resnet20", loss="ce")
        if not device_side:
            learn.remove_cb(next(cb for cb in learn.cbs if isinstance(cb, SmoothLossOnDevice)))
        with learn.no_bar(), learn.no_logging():
            learn.fit(2, 0.05)
        assert isinstance(learn.recorder.smooth_loss, DeviceSmoothLoss) == device_side
        runs.append(learn.recorder)
    dev, ref = runs
    assert len(dev.losses) == len(ref.losses) == 2 * len(digits.train)
    assert all(v.device.type == "cpu" for v in dev.losses) and dev.smooth_loss.val.device.type == "cpu"
    torch.testing.assert_close(torch.stack(dev.losses), torch.stack(ref.losses).float(), rtol=1e-6, atol=0)
    assert [v[0] for v in dev.values] == pytest.approx([v[0] for v in ref.values], rel=1e-6)
