"""GR's automatic setting (`fastgr.handover`): the rule on given signals, cross-entropy until it decides, the blend,
what a run says it decided, resume, and the refusals."""

import pandas as pd
import pytest
import torch
from fastai.callback.core import Callback
from fastai.data.core import DataLoaders
from fastai.data.load import DataLoader
from fastai.learner import Learner
from fastai.losses import CrossEntropyLossFlat
from fastai.optimizer import SGD
from torch import nn

import fastgr.handover as handover
from fastgr import GRCallback, TrainConfig, train_run
from fastgr.gradient import gr_terms
from fastgr.handover import Decision, EpochSignals, Handover, handover_due, wilson_bounds
from fastgr.signals import NoiseSignals


def test_the_rule_waits_for_the_memorised_share_to_double_beyond_its_sampling_error():
    e = EpochSignals
    assert (handover.HANDOVER_FACTOR, handover.HANDOVER_EPOCHS) == (2.0, 1)
    assert wilson_bounds(0.1, 0) == (0.0, 1.0)
    lo, hi = wilson_bounds(0.1, 500)
    assert lo == pytest.approx(0.0767, abs=1e-4) and hi == pytest.approx(0.1294, abs=1e-4)  # the Wilson interval
    assert handover_due([]) is None and handover_due([e(None, 0, 0.8), e(0.5, 400, 0.5)]) is None  # no lowest yet
    history = [e(None, 0, 0.8), e(0.30, 600, 0.6), e(0.10, 500, 0.4), e(0.20, 500, 0.38)]
    assert handover_due(history) is None  # doubled, but within the lowest's error (2 x 0.1294 = 0.259)
    why = handover_due(history + [e(0.30, 500, 0.33)])  # its lower bound 0.261
    assert why.memorised == 0.30 and why.lowest == pytest.approx(0.1294, abs=1e-4)
    # a share over a handful of disagreements, as on clean labels, bounds little: 0 of 3 is at most 0.56
    assert wilson_bounds(0.0, 3)[1] == pytest.approx(0.5615, abs=1e-4)
    assert handover_due([e(0.6, 400, 0.1), e(0.0, 3, 0.0), e(1.0, 3, 0.0)]) is None  # 3 of 3: at least 0.44
    assert handover_due([e(0.6, 400, 0.1), e(0.0, 3, 0.0), e(0.9, 300, 0.0)]) is None  # 0.86 < 2 x 0.56


def test_the_rule_with_another_factor_and_several_epochs_in_a_row():
    "The variant tried (docs/design.md): a fifth, in two epochs in a row, which passes over a one-epoch jump."
    e = EpochSignals
    history = [e(None, 0, 0.8), e(0.30, 600, 0.6), e(0.10, 500, 0.4), e(0.19, 500, 0.38)]
    assert handover_due(history, 1.2, 1).memorised == 0.19  # lower bound 0.1580 >= 1.2 x 0.1294 = 0.1553 ...
    assert handover_due(history, 1.2, 2) is None  # ... in one epoch only
    assert handover_due(history + [e(0.18, 500, 0.36)], 1.2, 2) is None  # lower bound 0.1488 < 0.1553
    why = handover_due(history + [e(0.20, 500, 0.36)], 1.2, 2)  # the second epoch in a row: 0.1673
    assert why.memorised == 0.20 and why.lowest == pytest.approx(0.1294, abs=1e-4)
    # a jump as the first guesses settle is one epoch: 0.26 to 0.38, then back down (digits 40%, epochs 2-4)
    jump = [e(None, 0, 0.86), e(0.26, 1200, 0.72), e(0.38, 1000, 0.48)]
    assert handover_due(jump, 1.2, 1) is not None and handover_due(jump + [e(0.15, 700, 0.41)], 1.2, 2) is None
    assert handover_due(history[:1], 1.2, 2) is None  # fewer epochs than the run of them asked for


def linear_learner(cbs, loss_func=None, n=64, c=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    x, y = torch.randn(n, 4, generator=g), torch.randint(0, c, (n,), generator=g)
    torch.manual_seed(seed)
    train = DataLoader(list(zip(x, y)), bs=16, shuffle=False)
    valid = DataLoader(list(zip(x, y)), bs=16)
    return Learner(DataLoaders(train, valid), nn.Linear(4, c), loss_func=loss_func or CrossEntropyLossFlat(),
                   opt_func=lambda p, lr: SGD(p, lr, mom=0.0, wd=0.0), lr=0.1, cbs=cbs)


def test_automatic_gr_adds_what_it_reads_and_trains_as_cross_entropy_until_it_decides(monkeypatch):
    monkeypatch.setattr(handover, "handover_due", lambda history: None)  # never decides
    auto = linear_learner([GRCallback(lam=None, beta=None)])
    assert {NoiseSignals, Handover} <= {type(cb) for cb in auto.cbs}
    ce = linear_learner([])
    with auto.no_bar(), auto.no_logging(), ce.no_bar(), ce.no_logging():
        auto.fit(3)
        ce.fit(3)
    for a, b in zip(auto.model.parameters(), ce.model.parameters()):
        assert torch.equal(a, b)  # the learner's own loss and gradient: cross-entropy to the last bit
    assert not (a == 0).all() and auto.gr.terms is None
    assert auto.handover.decided is None and auto.handover.history and len(auto.handover.history) == 3
    # each memorised share comes with the count it is of: the last epoch's confident disagreements seen again
    h = auto.handover.history
    assert h[0].memorised is None and h[0].base == 0
    assert all(s.base > 0 and s.memorised * s.base == pytest.approx(round(s.memorised * s.base)) for s in h[1:])


def test_after_the_decision_gr_blends_in_over_its_share_of_training(monkeypatch):
    # decides at the end of the second epoch (index 1); a blend of 0.2 of 10 epochs: 2 epochs
    monkeypatch.setattr(handover, "handover_due", lambda history: Decision(0.3, 0.1) if len(history) >= 2 else None)
    learn = linear_learner([GRCallback(lam=None, beta=None)])
    learn.handover.blend = 0.2
    shares = []

    class Watch(Callback):
        order = 99

        def after_batch(self):
            if self.training:
                shares.append((self.learn.epoch, self.learn.gr.progress()))

    learn.add_cb(Watch())
    with learn.no_bar(), learn.no_logging():
        learn.fit(10)
    assert learn.handover.decided == 1 and learn.handover.why == (0.3, 0.1)
    by_epoch = pd.DataFrame(shares, columns=["epoch", "share"]).groupby("epoch")["share"]
    assert (by_epoch.max()[:2] == 0).all()  # cross-entropy up to the decision
    # from epoch 2 (0-based) the share rises with the training's progress, 4 steps an epoch: 0.125 .. 1
    assert by_epoch.min()[2] == pytest.approx(0.125) and by_epoch.max()[3] == pytest.approx(1.0)
    assert (by_epoch.min()[4:] == 1).all()
    table = [row[-1] for row in learn.recorder.values]  # gr_share, last column: at each epoch's end
    assert table[:2] == [0, 0] and table[2] == pytest.approx(0.5) and table[3:] == [1.0] * 7


def test_refusals():
    with pytest.raises(ValueError, match="both lam and beta, or neither"):
        GRCallback(lam=None, beta=8)
    with pytest.raises(ValueError, match="warmup must be 0"):
        GRCallback(lam=None, beta=None, warmup=0.5)
    learn = linear_learner([])
    learn.add_cb(GRCallback(lam=None, beta=None))  # after the Learner was made: nothing added for it
    with pytest.raises(ValueError, match="pass it to the Learner when it is made"):
        with learn.no_bar(), learn.no_logging():
            learn.fit(1)
    for bad in (dict(preset=True), dict(lam=1.0), dict(tune=True), dict(warmup=0.2), dict(loss="ce")):
        with pytest.raises(ValueError, match="--auto decides GR's setting itself"):
            TrainConfig(auto=True, **bad)


def test_a_run_says_what_it_decided_and_resumes_to_the_same_decision(tmp_path, monkeypatch):
    from tests.test_experiment import StopAfter, strip_seconds

    # the rule fires at the end of epoch 2, before the cut after epoch 3: the resumed run must know it
    monkeypatch.setattr(handover, "handover_due", lambda history: Decision(0.4, 0.15) if len(history) >= 2 else None)
    cfg = dict(data="digits", noise=0.4, epochs=6, img_size=8, auto=True)
    notes = []

    class Notes(StopAfter):
        def note(self, text, style=None):
            notes.append(text)

    full = train_run(TrainConfig(**cfg), tmp_path / "full", reporter=Notes(99))
    assert any("cross-entropy until epoch 2" in n and "memorised 0.400" in n and "lowest 0.150" in n for n in notes)
    m = pd.read_csv(tmp_path / "full" / "metrics.csv")
    assert list(m["gr_share"]) == [0, 0, 1, 1, 1, 1]  # a blend of 0.1 of 6 epochs: within the third
    config = __import__("json").loads((tmp_path / "full" / "config.json").read_text())
    assert config["resolved"]["auto"] is True and config["resolved"]["lam"] == 1.0
    with pytest.raises(KeyboardInterrupt):
        train_run(TrainConfig(**cfg), tmp_path / "cut", reporter=StopAfter(3))
    resumed = train_run(TrainConfig(epochs=99), tmp_path / "cut", resume=True)
    assert {k: v for k, v in resumed.items() if k != "seconds"} == {k: v for k, v in full.items() if k != "seconds"}
    pd.testing.assert_frame_equal(strip_seconds(pd.read_csv(tmp_path / "cut" / "metrics.csv")), strip_seconds(m))
    # the exported learner predicts (what it decided with is not exported; fitting it again says what it needs)
    from fastgr.data import load_data
    from fastgr.prediction import load_run_learner, predict_with_learner

    assert load_run_learner(tmp_path / "full").gr.auto
    probs = predict_with_learner(tmp_path / "full" / "learner.pkl", load_data("digits", img_size=8))
    assert probs.shape == (1437, 10) and torch.allclose(probs.sum(1), torch.ones(1437))


def test_the_confidence_it_reads_is_the_mean_probability_of_the_predicted_class_rescaled():
    "With the learning rate 0 every batch sees the same model: `confidence` is its mean max-probability, rescaled."
    learn = linear_learner([GRCallback(lam=None, beta=None)], c=4)
    with learn.no_bar(), learn.no_logging():
        learn.fit(1, lr=0.0)
    x = torch.stack([b[0] for b in learn.dls.train.dataset])
    with torch.no_grad():
        p = learn.model(x).softmax(1).max(1).values.double().mean().item()
    got = learn.handover.history[0].confidence
    assert got == pytest.approx((p - 1 / 4) / (1 - 1 / 4), abs=1e-6) and 0 < got < 1
    assert "confidence" in learn.recorder.metric_names


def test_a_network_competent_from_its_first_epoch_trains_with_the_fixed_default_from_the_second(monkeypatch):
    monkeypatch.setattr(handover, "COMPETENT_CONFIDENCE", 0.0)  # any network is competent after its first epoch
    monkeypatch.setattr(handover, "handover_due", lambda history: pytest.fail("memorising is not watched then"))
    seen = []

    class Watch(Callback):
        order = GRCallback.order + 1  # after GR has set the step's gradient

        def after_loss(self):
            if self.training:
                gr = self.learn.gr
                want = gr_terms(self.learn.pred.detach(), self.learn.yb[0], 0.5, 8.0).gradient
                same = None if gr.terms is None else torch.equal(gr.terms.gradient, want)
                seen.append((self.learn.epoch, gr.progress(), gr.setting(), same))

    learn = linear_learner([GRCallback(lam=None, beta=None), Watch()])
    with learn.no_bar(), learn.no_logging():
        learn.fit(3)
    assert learn.handover.case == "competent" and learn.handover.decided == 0
    first = [s for s in seen if s[0] == 0]
    later = [s for s in seen if s[0] > 0]
    assert all(a == 0 and same is None for _, a, _, same in first)  # plain cross-entropy while the first is read
    assert all(a == 1 and setting == (0.5, 8.0) and same for _, a, setting, same in later)
    assert [row[-1] for row in learn.recorder.values] == [0, 1, 1]
    assert "competent from its first epoch" in learn.handover.decision() and "lam 0.5, beta 8" in \
        learn.handover.decision()


def test_a_long_training_is_the_budget_defaults_blend_to_the_last_bit(monkeypatch):
    "From `LONG_EPOCHS` on: lam 1 / beta 16 blended in over the first half, the same floats as `--warmup 0.5`."
    monkeypatch.setattr(handover, "LONG_EPOCHS", 4)
    monkeypatch.setattr(handover, "COMPETENT_CONFIDENCE", 2.0)  # never competent
    monkeypatch.setattr(handover, "handover_due", lambda history: pytest.fail("memorising is not watched then"))
    auto = linear_learner([GRCallback(lam=None, beta=None)])
    fixed = linear_learner([GRCallback(lam=1.0, beta=16.0, warmup=0.5)])
    with auto.no_bar(), auto.no_logging(), fixed.no_bar(), fixed.no_logging():
        auto.fit(4)
        fixed.fit(4)
    for a, b in zip(auto.model.parameters(), fixed.model.parameters()):
        assert torch.equal(a, b)
    assert auto.handover.case is None and [row[-1] for row in auto.recorder.values] == [0.5, 1, 1, 1]
    assert "a long training (4 epochs, from 4)" in auto.handover.decision()
    short = linear_learner([GRCallback(lam=None, beta=None)])
    with short.no_bar(), short.no_logging():
        monkeypatch.setattr(handover, "handover_due", lambda history: None)
        short.fit(3)  # shorter: cross-entropy (nothing memorised)
    assert [row[-1] for row in short.recorder.values] == [0, 0, 0]


def test_a_checkpoint_of_the_first_rule_resumes_as_a_handover_on_memorising():
    h = Handover()
    h.load_state_dict({"history": [(None, 0, 0.8), (0.3, 500, 0.5)], "decided": 1, "why": (0.3, 0.1), "total": 10})
    assert h.case == "memorising" and h.history[1].confidence is None
    h.load_state_dict({"history": [(None, 0, 0.8, 0.2)], "decided": None, "why": None, "total": 10})
    assert h.case is None and h.history[0].confidence == 0.2
    fresh = Handover()
    fresh.load_state_dict(h.state_dict())
    assert fresh.state_dict() == h.state_dict()


def test_competence_is_the_first_epochs_confidence_against_the_threshold(monkeypatch):
    "Just above the first epoch's confidence: not competent (cross-entropy); at it: competent."
    monkeypatch.setattr(handover, "handover_due", lambda history: None)
    probe = linear_learner([GRCallback(lam=None, beta=None)])
    with probe.no_bar(), probe.no_logging():
        probe.fit(2)
    first = probe.handover.history[0].confidence
    for threshold, case in ((first + 1e-9, None), (first, "competent")):
        monkeypatch.setattr(handover, "COMPETENT_CONFIDENCE", threshold)
        learn = linear_learner([GRCallback(lam=None, beta=None)])
        with learn.no_bar(), learn.no_logging():
            learn.fit(2)
        assert learn.handover.history[0].confidence == first and learn.handover.case == case
        assert [row[-1] for row in learn.recorder.values] == ([0, 0] if case is None else [0, 1])
