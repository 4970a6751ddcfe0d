"""Emphasis collapse: the effective sample size, its warning, the warm-up that prevents it, and the tuner."""

import json
import warnings

import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn.functional as F

from fastgr import (
    EmphasisCollapseWarning,
    EmphasisMonitor,
    GRCallback,
    ce_gradient,
    effective_sample_size,
    emphasis_weights,
    gr_gradient,
    gr_terms,
)
from tests.conftest import make_image_folder
from tests.test_callback import Grab, fit, linear_problem, make_learner


def test_ess_on_crafted_logits():
    B, C = 64, 10
    y = torch.zeros(B, dtype=torch.long)
    # every example at the same p: equal weights, the whole batch counts
    same = torch.zeros(B, C)
    assert effective_sample_size(emphasis_weights(same, y, 1.0, 16.0)).item() == pytest.approx(1.0)
    # one example at the focus p = 1/2, the rest fitted (p near 1): with beta 200 it carries the batch
    crafted = torch.zeros(B, C)
    crafted[1:, 0] = 20.0
    crafted[0, 0] = torch.log(torch.tensor(9.0))  # p = 9 / (9 + 9) = 1/2
    w = emphasis_weights(crafted, y, 1.0, 200.0)
    assert w[0].item() > 0.999
    assert effective_sample_size(w).item() == pytest.approx(1 / B, rel=1e-3)


def test_ce_gradient_and_the_blend_are_what_they_say():
    g = torch.Generator().manual_seed(1)
    z = torch.randn(16, 5, generator=g, dtype=torch.float64) * 3
    y = torch.randint(0, 5, (16,), generator=g)
    zz = z.clone().requires_grad_(True)
    F.cross_entropy(zz, y).backward()
    torch.testing.assert_close(ce_gradient(z, y), zz.grad, rtol=1e-12, atol=1e-15)
    for a in (0.0, 0.3, 1.0):
        blend = gr_terms(z, y, 1.0, 16.0, mix=a).gradient
        torch.testing.assert_close(blend, a * gr_gradient(z, y, 1.0, 16.0) + (1 - a) * zz.grad, rtol=1e-12,
                                   atol=1e-15)
    with pytest.raises(ValueError, match=r"mix must be in \[0, 1\]"):
        gr_terms(z, y, mix=1.5)


@pytest.mark.parametrize("mode", ["blend", "ramp"])
def test_warmup_gradient_equals_the_documented_schedule(mode):
    x, y = linear_problem(n=16)
    grab = Grab()
    learn = make_learner(x, y, bs=8, cbs=[GRCallback(lam=1.0, beta=16.0, warmup=1.0, warmup_mode=mode), grab])
    fit(learn, epochs=1, lr=0.1)
    (z0, z1), (x0, x1), (y0, y1) = grab.logits, x.split(8), y.split(8)
    # batch 0 starts training (a = 0): plain cross-entropy, or GR's cross-entropy-like lam 0, beta 2
    if mode == "blend":
        g0 = torch.autograd.functional.jacobian(lambda z: F.cross_entropy(z, y0), z0)
    else:
        g0 = gr_gradient(z0, y0, 0.0, 2.0)
    torch.testing.assert_close(grab.grads[0][0], g0.T @ x0, rtol=1e-5, atol=1e-6)
    # batch 1 starts half-way (a = 0.5 of a warm-up over all of training)
    if mode == "blend":
        g1 = 0.5 * gr_gradient(z1, y1, 1.0, 16.0) + 0.5 * ce_gradient(z1, y1)
    else:
        g1 = gr_gradient(z1, y1, 0.5, 2.0 + 0.5 * (16.0 - 2.0))
    torch.testing.assert_close(grab.grads[1][0], g1.T @ x1, rtol=1e-5, atol=1e-6)
    assert not torch.allclose(grab.grads[1][0], gr_gradient(z1, y1, 1.0, 16.0).T @ x1, atol=1e-4)


def crafted_learner(rest_logit: float, gr: GRCallback, monitor: EmphasisMonitor, n: int = 64, c: int = 10):
    """A Learner whose logits are fixed and crafted (one-hot inputs, a linear layer holding the logits, lr 0): in
    each batch of 32 one example sits at GR's focus p = 1/2 (lam 1), the others at p = softmax of `rest_logit`
    against nine zeros. With beta 200 the focus example carries its batch (ESS about 1/32)."""
    y = torch.zeros(n, dtype=torch.long)
    logits = torch.zeros(n, c)
    logits[:, 0] = rest_logit
    logits[::32, 0] = torch.log(torch.tensor(9.0))  # p = 9 / (9 + 9) = 1/2
    learn = make_learner(torch.eye(n), y, bs=32, c=c, cbs=[gr, monitor])
    with torch.no_grad():
        learn.model.weight.copy_(logits.T)
        learn.model.bias.zero_()
    fit(learn, epochs=2, lr=0.0)
    return learn


def test_collapse_warning_fires_on_crafted_logits_that_starve_training():
    # the rest at p = 1/(1 + 9 e^2) ~ 0.015, below chance: nothing is learnt and one example per batch counts
    gr = EmphasisMonitor(collapse_steps=4)  # two epochs of two steps
    with pytest.warns(EmphasisCollapseWarning, match="emphasis collapse: lower beta or lam, or use warm-up"):
        crafted_learner(-2.0, GRCallback(lam=1.0, beta=200.0), gr)
    assert gr.collapsed_epochs == [0, 1]
    assert all(h["gr_ess"] == pytest.approx(1 / 32, rel=1e-2) and h["gr_mean_p"] < 0.2 for h in gr.history)
    # a starved start shorter than collapse_steps is not reported: healthy runs can begin like this
    brief = EmphasisMonitor(collapse_steps=5)
    with warnings.catch_warnings():
        warnings.simplefilter("error", EmphasisCollapseWarning)
        crafted_learner(-2.0, GRCallback(lam=1.0, beta=200.0), brief)
    assert brief.collapsed_epochs == []
    # the rule replayed on per-epoch means: (gr_ess, gr_mean_p, steps); a fitted epoch breaks the streak
    rule = EmphasisMonitor(collapse_steps=100)
    starved, fitted = (0.2, 0.15, 40), (0.2, 0.5, 40)
    assert rule.collapsed_in([starved] * 3, 10) == [0, 1, 2]
    assert rule.collapsed_in([starved, starved, fitted, starved, starved], 10) == []
    assert rule.collapsed_in([fitted, starved, starved, starved, starved], 10) == [1, 2, 3, 4]


def test_low_ess_on_fitted_labels_is_not_a_collapse():
    """The same concentrated weights, but the other examples fit their labels (p ~ 0.97): a warmed-up run
    that trains well can look like this (BENCHMARKS.md), so no warning."""
    gr = EmphasisMonitor(collapse_steps=1)
    with warnings.catch_warnings():
        warnings.simplefilter("error", EmphasisCollapseWarning)
        crafted_learner(6.0, GRCallback(lam=1.0, beta=200.0), gr)
    assert gr.collapsed_epochs == []
    assert all(h["gr_ess"] < 0.05 and h["gr_mean_p"] > 0.9 for h in gr.history)
    # the rule itself, at its thresholds: ESS below 0.3 of the batch and mean p below twice chance
    assert gr.is_collapse(0.29, 0.19, 10) and not gr.is_collapse(0.31, 0.19, 10)
    assert not gr.is_collapse(0.29, 0.21, 10) and gr.is_collapse(0.29, 0.49, 4)


def test_collapse_warning_on_a_training_run_that_starves():
    x, y = linear_problem(n=64, c=4)
    gr = EmphasisMonitor(collapse_steps=6)
    learn = make_learner(x, y, bs=32, cbs=[GRCallback(lam=1.0, beta=1000.0), gr])
    with pytest.warns(EmphasisCollapseWarning, match="emphasis collapse"):
        fit(learn, epochs=3)
    assert gr.collapsed_epochs == [0, 1, 2]
    assert all(h["gr_ess"] < 0.1 for h in gr.history)


def test_no_collapse_warning_on_a_healthy_run_or_during_warmup():
    x, y = linear_problem(n=64, c=4)
    with warnings.catch_warnings():
        warnings.simplefilter("error", EmphasisCollapseWarning)
        healthy = EmphasisMonitor(collapse_steps=1)
        fit(make_learner(x, y, bs=32, cbs=[GRCallback(lam=0.5, beta=8.0), healthy]), epochs=3)
        assert healthy.collapsed_epochs == [] and min(h["gr_ess"] for h in healthy.history) > 0.5
        # the same starving setting, but still warming up for the whole fit: nothing to report yet
        warming = EmphasisMonitor(collapse_steps=1)
        fit(make_learner(x, y, bs=32, cbs=[GRCallback(lam=1.0, beta=1000.0, warmup=1.0), warming]), epochs=2)
        assert warming.collapsed_epochs == []
        silenced = EmphasisMonitor(ess_threshold=None)
        fit(make_learner(x, y, bs=32, cbs=[GRCallback(lam=1.0, beta=1000.0), silenced]), epochs=1)


def test_bad_warmup_settings():
    with pytest.raises(ValueError, match="warmup must be a fraction"):
        GRCallback(warmup=1.5)
    with pytest.raises(ValueError, match="unknown warmup_mode 'cosine'"):
        GRCallback(warmup_mode="cosine")


@pytest.fixture
def larger_folder(tmp_path):
    return make_image_folder(tmp_path / "imgs40", per_class=40, held_out=10)


def test_tuner_picks_the_best_of_a_grid(tmp_path):
    """Digits with 40% noise and a grid whose second setting starves training (focus at p = 0, beta 1000: each
    batch is carried by its worst-fitted example, under noise mostly a wrong label): the tuner must pick the
    first. (Measured with 1 and 2 threads: held-out noisy accuracy about 0.48 against 0.10-0.13.)"""
    from fastgr import TrainConfig, tune_run

    cfg = TrainConfig(data="digits", noise=0.4, epochs=4, img_size=8, tune_holdout=0.25, warmup=0.0)
    result = tune_run(cfg, tmp_path / "tune", grid=[(0.5, 8.0), (0.0, 1000.0)])
    table = pd.read_csv(tmp_path / "tune" / "tune.csv")
    assert list(zip(table.lam, table.beta)) == [(0.5, 8.0), (0.0, 1000.0)]
    good, starved = table.holdout_acc_noisy
    assert good > starved + 0.2, table
    assert (result["lam"], result["beta"]) == (0.5, 8.0)
    assert table.emphasis_collapse_epochs[0] == 0
    # a quarter of each *given* class of the 1,437 training images
    assert abs(result["n_holdout"] - 1437 / 4) <= 5
    assert json.loads((tmp_path / "tune" / "tune.json").read_text())["lam"] == 0.5
    # each candidate keeps its held-out predictions: scored on the given labels they are the tuner's own figure;
    # on the true labels, tune.csv's holdout_acc_true (reported, not used to choose)
    from fastgr.data import load_data, stratified_split
    from fastgr.noise import training_labels

    data = load_data("digits", 8, cfg.valid_pct, cfg.seed)
    noisy = training_labels(data, 0.4, "symmetric", cfg.seed, None)
    held = stratified_split(noisy.given, 0.25, cfg.seed)
    for i, row in table.iterrows():
        pred = pd.read_csv(tmp_path / "tune" / "tune" / f"{i:02d}" / "holdout_pred.csv")
        assert len(pred) == result["n_holdout"] and (pred["given"] == noisy.given[held]).all()
        assert (pred["pred"] == pred["given"]).mean() == pytest.approx(row.holdout_acc_noisy, abs=1e-6)
        assert (pred["pred"] == noisy.true[held]).mean() == pytest.approx(row.holdout_acc_true, abs=1e-9)
    assert table.holdout_acc_true[0] > table.holdout_acc_noisy[0] + 0.1  # 40% of the held-out labels are wrong


def test_tuning_chooses_cross_entropy_where_the_held_out_labels_say_gr_loses(tmp_path, monkeypatch):
    """A grid of a starving GR setting and CE (digits, 40% noise): the tuner picks CE, and `train --tune` then
    trains with CE, not GR, and says so."""
    import fastgr.preparation
    from fastgr import TrainConfig, train_run, tune_run

    # 6 epochs: at 4, CE had barely begun to fit and its held-out figure hung on the CPU kind (0.265 on a Xeon,
    # 0.179 on an AMD EPYC, against the starved setting's 0.103)
    cfg = TrainConfig(data="digits", noise=0.4, epochs=6, img_size=8, tune_holdout=0.25)
    result = tune_run(cfg, tmp_path / "tune", grid=[(0.0, 1000.0, 0.0), "ce"])
    table = pd.read_csv(tmp_path / "tune" / "tune.csv")
    assert table["loss"].tolist() == ["gr", "ce"]
    starved, ce = table.holdout_acc_noisy
    assert ce > starved + 0.2, table  # measured 0.542 against 0.134 (EPYC)
    assert result["loss"] == "ce" and result["lam"] is None
    with pytest.raises(ValueError, match="baseline among ce, ls, gce, sce"):
        tune_run(cfg, grid=[(0.5, 8.0), "focal"])

    monkeypatch.setattr(fastgr.preparation, "TUNE_GRID", ((0.0, 1000.0, 0.0), "ce"))
    notes = []

    class Notes(fastgr.Reporter):
        def note(self, text, level="info"):
            notes.append(text)

    summary = train_run(cfg.replace(tune=True), tmp_path / "run", reporter=Notes())
    config = json.loads((tmp_path / "run" / "config.json").read_text())
    assert summary["loss"] == "ce" and summary["lam"] is None and config["resolved"]["lam"] is None
    assert any("ce scored best on the held-out noisy labels" in n for n in notes)
    # the final run is CE's: no GR telemetry in its table
    assert "gr_ess" not in pd.read_csv(tmp_path / "run" / "metrics.csv").columns


def test_noisy_label_accuracy_ranks_as_clean_accuracy_under_symmetric_noise_and_not_under_pairflip():
    """The tuner's statistic in expectation: a (1 - r) + (1 - a) r / (C - 1) under symmetric noise, whatever the
    errors; under pairflip noise an error into the flip class scores, so a less accurate model can rank first."""
    from fastgr.noise import pairflip_noise, symmetric_noise
    from fastgr.tuning import noisy_label_accuracy

    c, r = 10, 0.4
    sym = np.full((c, c), r / (c - 1)) + np.eye(c) * (1 - r - r / (c - 1))
    rng = np.random.default_rng(0)
    for _ in range(3):
        conf = rng.integers(0, 20, (c, c)) + np.eye(c, dtype=int) * 60
        a = np.trace(conf) / conf.sum()
        assert noisy_label_accuracy(conf, sym) == pytest.approx(a * (1 - r) + (1 - a) * r / (c - 1), abs=1e-12)
    # a realised transition in counts (true x given) gives the same, up to the draw
    y = np.repeat(np.arange(c), 500)
    drawn = symmetric_noise(y, r, c, seed=0)
    counts = np.bincount(drawn.true * c + drawn.given, minlength=c * c).reshape(c, c)
    assert noisy_label_accuracy(np.eye(c) * 10, counts) == pytest.approx(1 - r, abs=1e-12)  # 200 of 500 per class

    p = pairflip_noise(y, 0.3, c, seed=0)
    pair = np.bincount(p.true * c + p.given, minlength=c * c).reshape(c, c)
    flip_errors = np.eye(c) * 70 + np.roll(np.eye(c), 1, axis=1) * 30  # 0.70 clean, its errors on the flip class
    other_errors = np.eye(c) * 75 + np.roll(np.eye(c), 3, axis=1) * 25  # 0.75 clean, its errors elsewhere
    assert noisy_label_accuracy(flip_errors, pair) == pytest.approx(0.7 * 0.7 + 0.3 * 0.3)  # 0.58
    assert noisy_label_accuracy(other_errors, pair) == pytest.approx(0.75 * 0.7)  # 0.525: ranked below
    with pytest.raises(ValueError, match="same square shape"):
        noisy_label_accuracy(np.eye(3), np.eye(4))


def test_the_warmup_comes_with_the_setting_unless_given():
    from fastgr.config import TrainConfig
    from fastgr.config import gr_setting as _gr_setting
    from fastgr.presets import DEFAULT_WARMUP, PRESET_WARMUP
    from fastgr.tuning import grid_setting as _grid_setting

    def resolved(**kw):
        s = _gr_setting(TrainConfig(**kw), 0.4, 10)
        return s.lam, s.beta, s.warmup

    assert PRESET_WARMUP == 0.5 and DEFAULT_WARMUP == 0.0
    assert resolved() == (0.5, 8.0, 0.0)  # the fixed default (the default budget is 30 epochs)
    assert resolved(preset=True) == (1.0, 16.0, 0.5)
    assert resolved(preset=True, warmup=0.0) == (1.0, 16.0, 0.0)
    assert resolved(preset=True, lam=2.0) == (2.0, 16.0, 0.5)  # still the preset's spread
    assert resolved(lam=1.0, beta=16.0) == (1.0, 16.0, 0.0)  # by hand: the collapse warning says when to warm up
    assert resolved(lam=1.0, beta=16.0, warmup=0.3) == (1.0, 16.0, 0.3)
    assert _gr_setting(TrainConfig(loss="ce"), 0.4, 10) is None
    # the tuner's settings: their own warm-up, none, or the one given for all
    assert _grid_setting((1, 16, 0.5), None) == (1.0, 16.0, 0.5)
    assert _grid_setting((1, 16), None) == (1.0, 16.0, 0.0)
    assert _grid_setting((1, 16, 0.5), 0.2) == (1.0, 16.0, 0.2)
    with pytest.raises(ValueError, match=r"\(lam, beta\) or \(lam, beta, warmup\)"):
        _grid_setting((1, 16, 0.5, 2), None)


def test_the_default_setting_follows_the_budget():
    """No setting given: the fixed default below LONG_BUDGET_EPOCHS epochs of training, lam 1 / beta 16 / warm-up
    0.5 from there on (a fine-tune's head epochs count); a preset with no noise rate to go by falls back to it."""
    from fastgr.config import TrainConfig, gr_setting
    from fastgr.presets import FIXED_DEFAULT, LONG_BUDGET_EPOCHS, LONG_DEFAULT, default_note, default_setting

    def resolved(rate=0.4, **kw):
        s = gr_setting(TrainConfig(**kw), rate, 10)
        return s.lam, s.beta, s.warmup

    assert LONG_BUDGET_EPOCHS == 40 and default_setting(39) is FIXED_DEFAULT and default_setting(40) is LONG_DEFAULT
    assert resolved(epochs=39) == (0.5, 8.0, 0.0)
    assert resolved(epochs=40) == resolved(epochs=120) == (1.0, 16.0, 0.5)
    assert resolved(epochs=39, pretrained=True) == (1.0, 16.0, 0.5)  # 1 head epoch + 39
    assert resolved(epochs=39, weights="w.pth", freeze_epochs=0) == (0.5, 8.0, 0.0)
    assert resolved(epochs=120, warmup=0.2) == (1.0, 16.0, 0.2)
    assert resolved(epochs=120, lam=0.5, beta=8.0) == (0.5, 8.0, 0.0)  # given by hand: as given
    assert resolved(epochs=120, lam=2.0) == (2.0, 16.0, 0.5)  # the default's spread and warm-up
    assert resolved(rate=None, epochs=120, preset=True) == (1.0, 16.0, 0.5)  # no rate: the budget's default
    assert resolved(rate=None, epochs=10, preset=True) == (0.5, 8.0, 0.0)
    assert resolved(rate=0.2, epochs=120, preset=True) == (0.5, 12.0, 0.5)  # a rate: the paper's row
    assert gr_setting(TrainConfig(loss="sce", epochs=120), 0.4, 10) is None
    # the note names the setting and the way back; only the long-budget default has one
    assert "lam 0.5, beta 8" in default_note(LONG_DEFAULT) and "--lam 0.5 --beta 8" in default_note(LONG_DEFAULT)
    assert default_note(FIXED_DEFAULT) is None and default_note(LONG_DEFAULT._replace(source="given")) is None


def test_a_run_of_forty_epochs_trains_with_the_long_budget_default_and_says_so(tmp_path):
    import fastgr
    from fastgr import TrainConfig, train_run

    folder = make_image_folder(tmp_path / "imgs", per_class=8, held_out=2)
    notes = []

    class Notes(fastgr.Reporter):
        def note(self, text, level="info"):
            notes.append(text)

    summary = train_run(TrainConfig(data=str(folder), noise=0.25, epochs=40, bs=12, img_size=8), tmp_path / "run",
                        reporter=Notes())
    resolved = json.loads((tmp_path / "run" / "config.json").read_text())["resolved"]
    assert (resolved["lam"], resolved["beta"], resolved["warmup"]) == (1.0, 16.0, 0.5)
    assert resolved["setting_source"].startswith("fastgr's default from 40 epochs")
    assert (summary["lam"], summary["beta"], summary["warmup"]) == (1.0, 16.0, 0.5)
    assert sum("GR's default is lam=1, beta=16, warm-up 0.5" in n for n in notes) == 1


def test_grid_option_parses_pairs_and_triples():
    import typer

    from cli.tune import GRID_DEFAULT, parse_grid
    from fastgr.presets import TUNE_GRID

    assert parse_grid("0.5,8 1,16,0.5") == [(0.5, 8.0), (1.0, 16.0, 0.5)]
    assert parse_grid("0.5,8 ce gce") == [(0.5, 8.0), "ce", "gce"]
    assert parse_grid(GRID_DEFAULT) == [g if isinstance(g, str) else tuple(g) for g in TUNE_GRID]
    assert "ce" in TUNE_GRID  # cross-entropy is always a candidate
    assert {"gce", "sce"} <= set(TUNE_GRID)  # and the baselines that beat GR's defaults on a row of BENCHMARKS.md
    for bad in ("0.5,x", "0.5", "1,16,0.5,2", "1,16,1.5", "-1,8", "gr", "focal"):
        with pytest.raises(typer.BadParameter, match="--grid takes lam,beta or lam,beta,warmup"):
            parse_grid(bad)


def test_cli_tune_and_train_tune_and_the_red_warning(tmp_path, larger_folder):
    from fastgr.cli import app
    from typer.testing import CliRunner

    runner = CliRunner()
    tiny = ["--noise", "0.25", "--epochs", "6", "--img-size", "8", "--bs", "16"]
    r = runner.invoke(app, ["tune", str(larger_folder), "--grid", "0.5,8 0,1000", "--holdout", "0.25", *tiny])
    assert r.exit_code == 0, r.output
    assert "chosen: --lam 0.5 --beta 8 --warmup 0" in r.stdout
    assert "true labels" in r.stdout and "not used to make it" in r.stdout  # injected noise: the truth is known
    r = runner.invoke(app, ["tune", str(larger_folder), "--grid", "0.5,x"])
    assert r.exit_code == 2 and "--grid takes" in r.output
    out = tmp_path / "tuned"
    r = runner.invoke(app, ["train", str(larger_folder), "--tune", *tiny, "--epochs", "2", "--out", str(out)])
    assert r.exit_code == 0, r.output
    config = json.loads((out / "config.json").read_text())
    chosen = json.loads((out / "tune.json").read_text())
    assert (config["resolved"]["lam"], config["resolved"]["beta"], config["resolved"]["warmup"]) == (
        chosen["lam"], chosen["beta"], chosen["warmup"])
    assert chosen["loss"] != "gr" or config["resolved"]["setting_source"].startswith("tuned")
    # digits in batches of 64: 22 steps an epoch, so the starved run passes COLLAPSE_STEPS (100) in epoch 5
    r = runner.invoke(app, ["train", "digits", "--lam", "0", "--beta", "1000", "--warmup", "0", "--noise", "0.4",
                            "--epochs", "10", "--img-size", "8", "--bs", "64", "--out", str(tmp_path / "starved")])
    assert r.exit_code == 0, r.output
    assert "emphasis collapse: lower beta or lam, or use warm-up" in r.stdout
    summary = json.loads((tmp_path / "starved" / "summary.json").read_text())
    assert summary["emphasis_collapse_epochs"] > 0
    ess = pd.read_csv(tmp_path / "starved" / "metrics.csv").gr_ess
    assert summary["ess_min"] == pytest.approx(ess.min()) and summary["ess_final"] == pytest.approx(ess.iloc[-1])


def test_interrupted_train_tune_resumes_inside_the_tuning(tmp_path, larger_folder):
    """`train --tune --resume` keeps the settings already tuned and continues the one it was cut in: the same
    tune table and the same final run as an uninterrupted one, without training a finished setting again."""
    from fastgr import TrainConfig, train_run
    from fastgr.presets import TUNE_GRID

    from .test_experiment import StopAfter

    cfg = dict(data=str(larger_folder), noise=0.25, epochs=2, img_size=8, bs=16, tune=True, tune_holdout=0.25)
    full = train_run(TrainConfig(**cfg), tmp_path / "full")
    with pytest.raises(KeyboardInterrupt):  # in the second setting's second epoch
        train_run(TrainConfig(**cfg), tmp_path / "cut", reporter=StopAfter(4))
    tune = tmp_path / "cut" / "tune"
    assert (tune / "00" / "result.json").exists() and (tune / "01" / "checkpoint.pth").exists()
    assert not (tmp_path / "cut" / "tune.json").exists()
    from fastgr import RunFolder

    # no checkpoint of its own yet, and still a run to continue (what bench/ scripts resume by)
    assert not (tmp_path / "cut" / "checkpoint.pth").exists() and RunFolder(tmp_path / "cut").interrupted
    assert not RunFolder(tmp_path / "full").interrupted and not RunFolder(tmp_path / "none").interrupted
    assert json.loads((tmp_path / "cut" / "config.json").read_text())["resolved"] is None  # resolved after tuning
    first = (tune / "00" / "result.json").stat().st_mtime_ns
    resumed = train_run(TrainConfig(epochs=99), tmp_path / "cut", resume=True)
    assert (tune / "00" / "result.json").stat().st_mtime_ns == first  # read, not trained again
    drop = ["seconds"]
    a = pd.read_csv(tmp_path / "cut" / "tune.csv").drop(columns=drop)
    b = pd.read_csv(tmp_path / "full" / "tune.csv").drop(columns=drop)
    assert len(a) == len(TUNE_GRID)
    pd.testing.assert_frame_equal(a, b)
    assert not RunFolder(tmp_path / "cut").interrupted
    resolved = json.loads((tmp_path / "cut" / "config.json").read_text())["resolved"]
    assert resolved == json.loads((tmp_path / "full" / "config.json").read_text())["resolved"]
    for key in full:
        if key != "seconds":
            assert resumed[key] == full[key], key
    # a --tune run's training seconds include its tuning runs
    parts = [json.loads(p.read_text())["seconds"] for p in (tmp_path / "full").glob("**/result.json")]
    assert len(parts) == len(TUNE_GRID) + 1 and full["seconds"] == pytest.approx(sum(parts), abs=0.02)
    # written over, cut in the first setting and resumed: the older run's results are not read as this one's
    planted = tmp_path / "full" / "tune" / "02" / "result.json"
    planted.write_text(json.dumps({**json.loads(planted.read_text()), "test_accuracy_final": 2.0}))
    with pytest.raises(KeyboardInterrupt):
        train_run(TrainConfig(**cfg), tmp_path / "full", overwrite=True, reporter=StopAfter(1))
    assert not planted.exists() and not (tmp_path / "full" / "result.json").exists()
    assert not (tmp_path / "full" / "summary.json").exists()
    again = train_run(TrainConfig(epochs=99), tmp_path / "full", resume=True)
    assert pd.read_csv(tmp_path / "full" / "tune.csv").drop(columns=drop).equals(b)
    assert again["test_accuracy_final"] == full["test_accuracy_final"]
