"""bench/reproduce_table3.py's parts that train nothing: what a confidence threshold does to the correction."""

import importlib.util
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def table3():
    spec = importlib.util.spec_from_file_location("reproduce_table3", ROOT / "bench" / "reproduce_table3.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_threshold_rows_count_fixes_and_breaks(table3):
    "Four labels, two corrupted (1 and 3); worked by hand at thresholds 0, 0.65 and 0.8."
    given, true = np.array([0, 0, 1, 1]), np.array([0, 1, 1, 0])
    probs = torch.tensor([[0.9, 0.1], [0.3, 0.7], [0.6, 0.4], [0.95, 0.05]])
    rows = table3.threshold_rows(probs, given, true, [0, 0.65, 0.8])
    got = [(r["relabelled_fraction"], r["correction_precision"], r["correction_recall"], r["noise_rate_after"],
            r["broken"]) for r in rows]
    # 0: relabels 1, 2, 3 (2 was right: broken); 0.65: 1 and 3, both fixed; 0.8: only 3, so 1 stays wrong
    assert got == [(0.75, pytest.approx(2 / 3), 1.0, 0.25, 1), (0.5, 1.0, 1.0, 0.0, 0), (0.25, 1.0, 0.5, 0.25, 0)]
    lines = []
    table3.print_thresholds(rows, lines.append)
    assert lines[-1].splitlines()[-1] == "| 0.8 | 0.250 | 1.000 | 0.500 | 0.250 | 0 |"


def test_thresholds_need_probabilities_and_confidences(tmp_path):
    "One line, before any data is read: no --probs file, or a threshold outside [0, 1]."
    run = [sys.executable, str(ROOT / "bench" / "reproduce_table3.py"), "--data", str(tmp_path / "none")]
    out = subprocess.run([*run, "--thresholds", "0.5"], capture_output=True, text=True, cwd=tmp_path)
    assert out.returncode != 0 and out.stderr.strip() == "error: --thresholds needs --probs of a finished GR run"
    probs = tmp_path / "p.pt"
    torch.save(torch.full((2, 2), 0.5), probs)
    out = subprocess.run([*run, "--thresholds", "1.5", "--probs", str(probs)], capture_output=True, text=True,
                         cwd=tmp_path)
    assert out.returncode != 0 and out.stderr.strip() == "error: --thresholds are confidences in [0, 1]"
    out = subprocess.run([*run, "--bs", "0"], capture_output=True, text=True, cwd=tmp_path)
    assert out.returncode != 0 and out.stderr.strip() == "error: --bs must be at least 1, got 0"


def test_row_names_say_how_batches_were_drawn(table3):
    """The issue's batches (128 at random) keep the plain names; the released solver's are named apart, and still
    stand beside the paper's row of the same method."""
    assert table3.row_name("ce", 0.5) == "CE" and table3.row_name("gr", 0.5) == "GR (warm-up 0.5)"
    assert table3.row_name("ce", 0.5, 256, True) == "CE (class-balanced 256)"
    assert table3.row_name("gr", 0.5, 256, True) == "GR (warm-up 0.5, class-balanced 256)"
    assert table3.row_name("correct", 0, 64) == "GR + correction (batch 64)"
    assert table3.paper_row(table3.row_name("gr", 0.5, 256, True)) == "GR"
