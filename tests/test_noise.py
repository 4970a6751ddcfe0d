"""Label noise, presets and label correction: exact counts, the truth kept, known numbers."""

import numpy as np
import pytest

from fastgr.correction import correction_report, relabel
from fastgr.noise import (
    CIFAR10_ASYMMETRIC,
    NoisyLabels,
    add_noise,
    asymmetric_noise,
    load_labels,
    pairflip_noise,
    save_labels,
    symmetric_noise,
)
from fastgr.presets import FIXED_DEFAULT, paper_setting

Y = np.repeat(np.arange(10), 100)  # 10 classes x 100


def test_symmetric_flips_exactly_r_of_each_class_to_other_classes():
    n = symmetric_noise(Y, 0.4, 10, seed=1)
    assert np.array_equal(n.true, Y)
    for c in range(10):
        assert n.flipped[Y == c].sum() == 40
    assert (n.given[n.flipped] != n.true[n.flipped]).all()
    assert n.realised_rate == pytest.approx(0.4)
    # the new class is uniform over the 9 others: every (true, given) pair occurs
    pairs = np.zeros((10, 10), int)
    np.add.at(pairs, (n.true[n.flipped], n.given[n.flipped]), 1)
    assert (np.diag(pairs) == 0).all() and (pairs + np.eye(10, dtype=int) > 0).all()
    # seeded: same seed, same draw; other seed, another
    assert np.array_equal(symmetric_noise(Y, 0.4, 10, seed=1).given, n.given)
    assert not np.array_equal(symmetric_noise(Y, 0.4, 10, seed=2).given, n.given)


def test_pairflip_and_asymmetric():
    n = pairflip_noise(Y, 0.3, 10, seed=0)
    assert n.flipped.sum() == 300 and (n.given[n.flipped] == (n.true[n.flipped] + 1) % 10).all()
    a = asymmetric_noise(Y, 0.5, 10, seed=0)
    moved = a.flipped
    assert moved.sum() == 5 * 50  # five source classes, half of each
    assert all(CIFAR10_ASYMMETRIC[t] == g for t, g in zip(a.true[moved], a.given[moved]))
    assert not moved[np.isin(Y, [0, 1, 6, 7, 8])].any()
    custom = asymmetric_noise(Y, 1 / 4, 10, seed=0, class_map={0: 1})
    assert custom.flipped.sum() == 25 and custom.meta["class_map"] == {0: 1}


def test_rate_zero_is_the_truth_and_bad_inputs_are_named():
    assert not add_noise(Y, 0.0, 10).flipped.any()
    with pytest.raises(ValueError, match=r"noise rate must be in \[0, 1\)"):
        add_noise(Y, 1.0, 10)
    with pytest.raises(ValueError, match="unknown noise type 'random'"):
        add_noise(Y, 0.1, 10, "random")
    with pytest.raises(ValueError, match=r"labels must lie in \[0, 5\)"):
        add_noise(Y, 0.1, 5)
    with pytest.raises(ValueError, match="not pairs of two different classes"):
        asymmetric_noise(Y, 0.1, 10, class_map={3: 3})


def test_labels_file_round_trip_keeps_the_truth(tmp_path):
    classes = [f"c{i}" for i in range(10)]
    n = symmetric_noise(Y, 0.2, 10, seed=5)
    items = [f"img/{i}.png" for i in range(len(Y))]
    path = save_labels(tmp_path / "l.csv", n, classes, items, {"corrected_label": n.true})
    back, back_items, extra = load_labels(path, classes)
    assert np.array_equal(back.given, n.given) and np.array_equal(back.true, n.true)
    assert back_items == items and np.array_equal(extra, n.true)
    assert back.noise_type == "symmetric" and back.seed == 5
    with pytest.raises(ValueError, match="not among the data's 3 classes"):
        load_labels(path, classes[:3])


def test_paper_settings_by_noise_and_classes():
    assert paper_setting(0.4, 10)[:2] == (1.0, 16.0)
    assert paper_setting(0.45, 10)[:2] == (1.0, 16.0)
    assert paper_setting(0.0, 10)[:2] == (0.0, 2.0)
    assert paper_setting(0.8, 2)[:2] == (2.0, 12.0)
    assert paper_setting(0.4, 100)[:2] == (0.4, 6.0)
    assert paper_setting(0.6, 200)[:2] == (0.5, 8.0)
    assert paper_setting(0.0, 100)[:2] == (0.0, 2.0)  # CIFAR-100's clean row (Table 2)
    assert paper_setting(0.15, 100)[:2] == (0.3, 6.0)  # the nearest row
    assert paper_setting(0.3, 10)[:2] == (1.0, 16.0)  # halfway: the noisier row, floating point notwithstanding
    assert paper_setting(0.1, 10)[:2] == (0.5, 12.0)
    assert paper_setting(0.29, 10)[:2] == (0.5, 12.0)
    assert paper_setting(None, 10) == FIXED_DEFAULT
    with pytest.raises(ValueError):
        paper_setting(1.2, 10)


def test_relabel_and_report_on_known_numbers():
    probs = np.array([[0.9, 0.1], [0.2, 0.8], [0.6, 0.4], [0.45, 0.55], [0.7, 0.3]])
    given = np.array([0, 0, 1, 1, 1])
    true = np.array([0, 1, 0, 0, 1])
    fixed = relabel(probs, given)
    assert fixed.tolist() == [0, 1, 0, 1, 0]
    assert relabel(probs, given, threshold=0.65).tolist() == [0, 1, 1, 1, 0]
    r = correction_report(given, fixed, true, probs.argmax(1))
    assert r["relabelled"] == 3 and r["relabelled_fraction"] == pytest.approx(0.6)
    # relabelled 1, 2, 4: right at 1 and 2, wrong at 4 -> precision 2/3; noisy 1, 2, 3: fixed 1, 2 -> recall 2/3
    assert r["correction_precision"] == pytest.approx(2 / 3) and r["correction_recall"] == pytest.approx(2 / 3)
    assert r["noise_rate_before"] == pytest.approx(0.6) and r["noise_rate_after"] == pytest.approx(0.4)
    assert r["broken"] == 1
    assert r["fit_clean"] == pytest.approx(0.5) and r["fit_noisy_given"] == pytest.approx(1 / 3)
    unknown = correction_report(given, fixed)
    assert unknown["correction_precision"] is None and unknown["truth_known"] is False


def test_noisy_labels_checks_shapes():
    with pytest.raises(ValueError, match="same length"):
        NoisyLabels(np.zeros(3), np.zeros(4))
