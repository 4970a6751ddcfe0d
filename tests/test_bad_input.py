"""Bad input that used to pass silently: each now a clear error, or an honest value."""

import json
import math

import pytest
from fastgr.cli import app
from typer.testing import CliRunner

from fastgr import GRCallback
from fastgr.files import write_json
from tests.test_callback import fit, linear_problem, make_learner

runner = CliRunner()


def test_json_is_strict_non_finite_numbers_become_null(tmp_path):
    path = write_json(tmp_path / "s.json", {"a": math.nan, "b": [1.0, math.inf], "c": {"d": -math.inf}, "e": 0.5})
    text = path.read_text()
    assert "NaN" not in text and "Infinity" not in text
    assert json.loads(text) == {"a": None, "b": [1.0, None], "c": {"d": None}, "e": 0.5}


def test_two_gr_callbacks_and_bad_collapse_thresholds_are_refused():
    x, y = linear_problem()
    learn = make_learner(x, y, bs=8, cbs=[GRCallback(), GRCallback()])
    with pytest.raises(ValueError, match="a Learner takes one GRCallback"):
        fit(learn)
    with pytest.raises(ValueError, match=r"ess_threshold is a fraction of the batch in \(0, 1\]"):
        GRCallback(ess_threshold=-1)
    with pytest.raises(ValueError, match="collapse_steps a whole number >= 1"):
        GRCallback(collapse_steps=0)


def test_correct_without_the_runs_labels_refuses_to_guess(tmp_path, image_folder):
    out = tmp_path / "run"
    r = runner.invoke(app, ["train", str(image_folder), "--noise", "0.3", "--epochs", "1", "--img-size", "8",
                            "--bs", "16", "--out", str(out)])
    assert r.exit_code == 0, r.output
    (out / "labels.csv").unlink()
    r = runner.invoke(app, ["correct", str(out)])
    assert r.exit_code == 1 and "labels.csv is missing" in r.stderr and "labels it trained on are unknown" in r.stderr
    assert not (out / "labels_corrected.csv").exists()
