"""The per-epoch noise signals (`fastgr.signals`): cleanlab's calibrated confident joint, checked on planted noise,
and the columns a training run gets."""

import numpy as np
import pandas as pd
import pytest
import torch

from fastgr import TrainConfig, train_run
from fastgr.signals import calibrated_noise_rate, confident_joint


@pytest.mark.parametrize("rate", [0.2, 0.4])
def test_a_model_that_has_learnt_the_truth_gives_the_planted_noise_rate(rate):
    """Where the predictions are the true classes (the early-learning phase, before memorising), the calibrated
    confident joint counts exactly the labels that differ from them; unconfident predictions drop out per class."""
    from fastgr.noise import symmetric_noise

    rng = np.random.default_rng(0)
    true = rng.integers(0, 5, 2000)
    noisy = symmetric_noise(true, rate, 5, seed=1)
    given, pred = torch.as_tensor(noisy.given), torch.as_tensor(true)
    p_pred = torch.as_tensor(rng.uniform(0.5, 1.0, 2000), dtype=torch.float32)
    thresholds = torch.full((5,), 0.6)  # a third of the predictions below their class's bar: not counted
    joint = confident_joint(given, pred, p_pred, thresholds)
    assert joint.sum() == pytest.approx(float((p_pred >= 0.6).sum()))
    est = calibrated_noise_rate(joint, torch.bincount(given, minlength=5))
    assert est == pytest.approx(noisy.realised_rate, abs=0.03)  # the sampling of the confident third


def test_a_training_run_records_the_signals_each_epoch(tmp_path):
    out = tmp_path / "run"
    summary = train_run(TrainConfig(data="digits", noise=0.4, epochs=6, img_size=8, loss="ce"), out)
    m = pd.read_csv(out / "metrics.csv")
    assert {"noise_cl", "noise_aum", "memorised"} <= set(m.columns)
    assert m["noise_cl"].between(0, 1).all() and m["noise_aum"].between(0, 1).all()
    assert np.isnan(m["memorised"].iloc[0]) and m["memorised"].iloc[1:].between(0, 1).all()  # needs a last epoch
    # six epochs: cross-entropy has learnt the digits and not yet the wrong labels (measured: 0.375 for 0.400;
    # the memorised share falls from 0.33 to 0.01, the AUM share, which keeps the first epochs' guesses, 0.48)
    assert abs(m["noise_cl"].iloc[-1] - summary["noise_rate_realised"]) < 0.05
    assert m["memorised"].iloc[-1] < 0.1 < m["memorised"].iloc[1] and m["noise_aum"].is_monotonic_decreasing
