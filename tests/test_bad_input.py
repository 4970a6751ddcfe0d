"""Bad input that used to pass silently: each now a clear error, or an honest value."""

import json
import math
import re
import warnings

import pandas as pd
import pytest
import torch
from fastgr.cli import app
from typer.testing import CliRunner

from fastgr import EmphasisMonitor, GRCallback
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
        EmphasisMonitor(ess_threshold=-1)
    with pytest.raises(ValueError, match="collapse_steps a whole number >= 1"):
        EmphasisMonitor(collapse_steps=0)


def test_correct_without_the_runs_labels_refuses_to_guess(tmp_path, image_folder):
    out = tmp_path / "run"
    r = runner.invoke(app, ["train", str(image_folder), "--noise", "0.3", "--epochs", "1", "--img-size", "8",
                            "--bs", "16", "--out", str(out)])
    assert r.exit_code == 0, r.output
    (out / "labels.csv").unlink()
    r = runner.invoke(app, ["correct", str(out)])
    assert r.exit_code == 1 and "labels.csv is missing" in r.stderr and "labels it trained on are unknown" in r.stderr
    assert not (out / "labels_corrected.csv").exists()


@pytest.mark.parametrize("opt", [["--lr", "inf"], ["--lr", "nan"], ["--wd", "inf"], ["--beta", "inf"],
                                 ["--warmup", "nan"], ["--eps", "nan"]])
def test_non_finite_settings_are_usage_errors(opt, tmp_path):
    r = runner.invoke(app, ["train", *opt, "--out", str(tmp_path / "r")])
    text = " ".join(r.output.split())
    assert r.exit_code == 2 and f"Invalid value for '{opt[0]}'" in text, r.output
    if opt[1] == "inf" and opt[0] != "--warmup":
        assert "must be a finite number, got inf" in text
    assert not (tmp_path / "r").exists()
    assert runner.invoke(app, ["weights", "--beta", "nan"]).exit_code == 2


def test_a_diverged_run_stops_with_one_line_and_keeps_no_nan(tmp_path, image_folder):
    out = tmp_path / "run"
    r = runner.invoke(app, ["train", str(image_folder), "--lr", "1e30", "--epochs", "3", "--img-size", "8",
                            "--bs", "16", "--out", str(out)])
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert r.exit_code == 1 and len(lines) == 1, r.output
    assert "training diverged at epoch 1" in lines[0] and "lower --lr" in lines[0]
    assert not (out / "summary.json").exists() and not (out / "checkpoint.pth").exists()  # no finite epoch
    for f in out.rglob("*.json"):
        text = f.read_text()
        assert "NaN" not in text and "Infinity" not in text, f


def test_gr_refuses_losses_whose_terms_it_would_drop_and_warns_about_unknown_ones():
    from fastai.losses import CrossEntropyLossFlat, FocalLossFlat, LabelSmoothingCrossEntropyFlat
    from torch import nn

    x, y = linear_problem()
    refused = {
        "label smoothing trains on soft targets": LabelSmoothingCrossEntropyFlat(),
        "its class weights would be ignored": CrossEntropyLossFlat(weight=torch.ones(4)),
        "its focal term re-weights examples": FocalLossFlat(),
        "label smoothing": nn.CrossEntropyLoss(label_smoothing=0.1),
    }
    for why, loss in refused.items():
        with pytest.raises(ValueError, match=f"GRCallback cannot train with {type(loss).__name__}: {why}"):
            fit(make_learner(x, y, bs=8, cbs=[GRCallback()], loss_func=loss))
    for fine in (CrossEntropyLossFlat(), nn.CrossEntropyLoss(), torch.nn.functional.cross_entropy):
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            fit(make_learner(x, y, bs=8, cbs=[GRCallback()], loss_func=fine))

    def my_loss(pred, targ):
        return torch.nn.functional.cross_entropy(pred, targ) * 2

    with pytest.warns(UserWarning, match="GRCallback replaces the gradient of my_loss with GR's own"):
        fit(make_learner(x, y, bs=8, cbs=[GRCallback()], loss_func=my_loss))


def test_every_pil_mode_decodes_faithfully(tmp_path):
    "16-bit PNGs used to come out all white (PIL's convert clips); palette, alpha and CMYK images as PIL reads them."
    import numpy as np
    from PIL import Image

    from fastgr.data import load_csv

    rows = []
    value16 = 40000  # 40000 / 257 = 155.6 -> 156 in 8 bits
    make = {
        "gray16.png": lambda: Image.fromarray(np.full((6, 6), value16, np.uint16)),
        "gray.png": lambda: Image.fromarray(np.full((6, 6), 156, np.uint8), "L"),
        "rgba.png": lambda: Image.fromarray(np.dstack([np.full((6, 6), 156, np.uint8)] * 3 +
                                                      [np.full((6, 6), 7, np.uint8)]), "RGBA"),
        "palette.png": lambda: Image.fromarray(np.full((6, 6), 156, np.uint8), "L").convert("P"),
        "cmyk.jpg": lambda: Image.fromarray(np.full((6, 6, 3), 156, np.uint8), "RGB").convert("CMYK"),
    }
    for i, (name, fn) in enumerate(make.items()):
        fn().save(tmp_path / name)
        rows.append((name, "a" if i % 2 else "b"))
    (tmp_path / "float.tif").write_bytes(b"")
    Image.fromarray(np.full((6, 6), 0.5, np.float32), "F").save(tmp_path / "float.tif")
    rows.append(("float.tif", "a"))
    import pandas as pd

    pd.DataFrame(rows, columns=["path", "label"]).assign(is_valid=[0, 0, 0, 0, 1, 1]).to_csv(tmp_path / "d.csv",
                                                                                          index=False)
    data = load_csv(tmp_path / "d.csv", img_size=6)
    # colour modes among them (RGBA, CMYK, palette): RGB, each gray image's value in all three channels; the first
    # image (16-bit grayscale) no longer decides for every other (docs/troubleshooting.md)
    assert data.channels == 3
    x = torch.cat([data.train_x, data.valid_x])
    assert int(x.min()) >= 155 and int(x.max()) <= 157, x.float().mean((1, 2, 3))
    assert [p for p, _ in data.skipped] == [str(tmp_path / "float.tif")]
    assert "float images have no agreed pixel range" in data.skipped[0][1]


def flat(output: str) -> str:
    "Click's usage error without rich's box: one line of words."
    return " ".join(re.sub(r"[│╭╮╰╯─]", " ", output).split())


def test_options_that_would_be_ignored_are_usage_errors(tmp_path, image_folder):
    labels = tmp_path / "labels.csv"
    assert runner.invoke(app, ["noise", str(image_folder), "--rate", "0.3", "--out", str(labels)]).exit_code == 0
    for cmd in ("train", "tune"):
        r = runner.invoke(app, [cmd, str(image_folder), "--labels", str(labels), "--noise", "0.1", "--noise-type",
                                "pairflip", "--out", str(tmp_path / cmd)])
        assert r.exit_code == 2, r.output
        assert "--labels brings its own noisy labels; drop --noise, --noise-type" in flat(r.output)
        assert not (tmp_path / cmd).exists()
    out = tmp_path / "run"
    args = [str(image_folder), "--epochs", "1", "--img-size", "8", "--bs", "16"]
    assert runner.invoke(app, ["train", *args, "--labels", str(labels), "--out", str(out)]).exit_code == 0
    assert json.loads((out / "config.json").read_text())["resolved"]["noise"] == 0.0  # what was used
    (out / "summary.json").unlink()  # as if cut short
    before = (out / "config.json").read_text()
    r = runner.invoke(app, ["train", "--out", str(out), "--resume", "--lr", "0.5", "--epochs", "9"])
    assert r.exit_code == 0, r.output
    assert "--resume continues the run with the settings in its config.json; ignored: --epochs, --lr" in \
        flat(r.stdout)
    assert (out / "config.json").read_text() == before  # config.json records what was used
    assert len(pd.read_csv(out / "metrics.csv")) == 1


def test_weights_of_a_huge_beta_stay_finite():
    r = runner.invoke(app, ["weights", "--beta", "2000", "--steps", "5"])
    assert r.exit_code == 0, r.output
    assert "nan" not in r.stdout and " inf" not in r.stdout
    assert "max/min weight = e^769.8" in flat(r.stdout) and "e^750.0" in r.stdout


def test_gr_takes_any_real_number_and_refuses_targets_on_another_device():
    import numpy as np

    from fastgr import gr_gradient

    z, y = torch.randn(4, 3, dtype=torch.float64), torch.tensor([0, 1, 2, 0])
    expected = gr_gradient(z, y, 0.5, 8.0)
    for lam, beta in ((np.float32(0.5), np.int64(8)), (torch.tensor(0.5), torch.tensor(8.0))):
        torch.testing.assert_close(gr_gradient(z, y, lam, beta), expected)
        assert GRCallback(lam, beta).beta == 8.0
    with pytest.raises(ValueError, match="lam must be a number"):
        gr_gradient(z, y, "0.5", 8.0)
    with pytest.raises(ValueError, match="targets are on meta and logits on cpu; put them on one device"):
        gr_gradient(z, y.to("meta"), 0.5, 8.0)


def test_models_matches_a_bare_name_as_a_substring():
    r = runner.invoke(app, ["models", "resnet"])
    assert r.exit_code == 0 and "cifar_resnet20" in r.stdout and "resnet18 " in r.stdout
    r = runner.invoke(app, ["models", "no_such_backbone"])
    assert "no backbone matches '*no_such_backbone*'" in flat(r.stdout)


def test_a_non_finite_logit_is_an_error_at_its_step_not_a_silent_nan():
    from fastgr import gr_gradient

    z, y = torch.randn(4, 3), torch.tensor([0, 1, 2, 0])
    z[1, 2] = math.nan
    with pytest.raises(RuntimeError, match="non-finite logits"):
        gr_gradient(z, y)
    x, y = linear_problem()
    x[3, 0] = math.inf
    with pytest.raises(FloatingPointError, match="training diverged at epoch 1, batch 1: non-finite logits"):
        fit(make_learner(x, y, bs=8, cbs=[GRCallback()]))


def test_errors_name_the_users_file_and_the_way_out(tmp_path, image_folder, monkeypatch):
    import tempfile

    from fastgr.files import write_text

    def denied(*a, dir=None, prefix="", **k):
        raise PermissionError(13, "Permission denied", f"{dir}/{prefix}abc.tmp")

    monkeypatch.setattr(tempfile, "mkstemp", denied)
    with pytest.raises(PermissionError) as e:
        write_text(tmp_path / "config.json", "{}")
    assert e.value.filename == str(tmp_path / "config.json")
    monkeypatch.undo()

    args = [str(image_folder), "--epochs", "1", "--img-size", "8", "--bs", "16"]
    out = tmp_path / "run"
    assert runner.invoke(app, ["train", *args, "--out", str(out)]).exit_code == 0
    # fastgr correct --out naming a folder
    r = runner.invoke(app, ["correct", str(out), "--out", str(tmp_path)])
    assert r.exit_code == 1 and f"{tmp_path} is a folder, not a file" in flat(r.stderr)
    # a garbage learner.pkl
    (out / "learner.pkl").write_bytes(b"not a pickle")
    r = runner.invoke(app, ["correct", str(out)])
    assert r.exit_code == 1 and "learner.pkl is not a readable exported learner" in flat(r.stderr)
    # a broken config.json and a 0-byte checkpoint on --resume
    (out / "summary.json").unlink()
    (out / "result.json").unlink()
    (out / "checkpoint.pth").write_bytes(b"")
    r = runner.invoke(app, ["train", "--out", str(out), "--resume"])
    assert r.exit_code == 1 and "checkpoint.pth is unreadable" in flat(r.stderr) and "--overwrite" in r.stderr
    (out / "config.json").write_text("{broken")
    r = runner.invoke(app, ["train", "--out", str(out), "--resume"])
    assert r.exit_code == 1 and "config.json is not valid JSON" in flat(r.stderr)


def test_folders_and_csvs_that_would_mislead(tmp_path, image_folder):
    import pandas as pd

    from fastgr.data import load_csv, load_folder

    rows = [(p.relative_to(image_folder).as_posix(), p.parent.name) for p in sorted(image_folder.rglob("*.png"))]
    csv = image_folder / "all_valid.csv"
    pd.DataFrame(rows, columns=["path", "label"]).assign(is_valid=1).to_csv(csv, index=False)
    with pytest.raises(ValueError, match="has no training rows: every one is held out"):
        load_csv(csv)
    with pytest.raises(ValueError, match="the class list names 'cat' more than once"):
        load_folder(image_folder, classes=["cat", "dog", "owl", "cat"])
    # an image beside the class folders has no class: skipped and reported, not silently dropped
    (image_folder / "train" / "stray.png").write_bytes((image_folder / "train" / "cat" / "train_000.png").read_bytes())
    data = load_folder(image_folder)
    assert [(p.split("/")[-1], r) for p, r in data.skipped] == [("stray.png", "not in a class sub-folder: its class "
                                                                              "is unknown")]
    r = runner.invoke(app, ["train", str(image_folder), "--epochs", "1", "--img-size", "8", "--out",
                            str(tmp_path / "run")])
    assert "skipped 1 image(s) outside the class sub-folders" in flat(r.stdout)
    # a labels file that labels an item twice
    labels = tmp_path / "labels.csv"
    assert runner.invoke(app, ["noise", str(image_folder), "--rate", "0.2", "--out", str(labels)]).exit_code == 0
    frame = pd.read_csv(labels)
    pd.concat([frame, frame.iloc[:1]]).to_csv(labels, index=False)
    r = runner.invoke(app, ["train", str(image_folder), "--labels", str(labels), "--out", str(tmp_path / "r2")])
    assert r.exit_code == 1 and "labels 1 item(s) twice" in flat(r.stderr)


def test_an_80_column_terminal_shows_each_epochs_test_accuracy_in_full(monkeypatch):
    import io

    from rich.console import Console

    import cli.render as render

    out = io.StringIO()
    monkeypatch.setattr(render, "console", Console(file=out, width=80, force_terminal=True, color_system=None))
    rep = render.RichReporter()
    rep.phase("train", 2)
    row = {"epoch": 1, "train_loss": 3.7634, "valid_loss": 0.5313, "test_acc": 0.883333, "train_acc_given": 0.693,
           "train_acc_true": 0.866, "gr_spread": 1.563, "gr_ess": 0.421, "gr_mean_p": 0.686, "seconds": 1.3}
    rep.epoch(row)
    rep.stop()
    text = out.getvalue()
    assert "0.8833" in text and "0.693" in text and "0.866" in text and "…" not in text
    assert "narrow terminal: some columns hidden" in text
    assert max(len(line) for line in text.splitlines()) <= 80


def test_a_terminal_shows_the_phases_batches_with_the_time_left(monkeypatch):
    "rich's progress bar under the table: the epoch, the phase's batches done of all, the time elapsed and left."
    import io

    from rich.console import Console

    import cli.render as render

    out = io.StringIO()
    monkeypatch.setattr(render, "console", Console(file=out, width=100, force_terminal=True, color_system=None))
    rep = render.RichReporter()
    rep.phase("train", 3, start=1)  # resumed: two epochs of 4 batches left
    rep.batch(2, 4)
    rep.live.refresh()
    assert "epoch 2/3" in out.getvalue() and "2/8 batches" in out.getvalue() and "left" in out.getvalue()
    rep.epoch({"epoch": 2, "test_acc": 0.5})
    rep.batch(1, 4)
    rep.live.refresh()
    assert "epoch 3/3" in out.getvalue() and "5/8 batches" in out.getvalue()
    rep.stop()


def test_an_interrupted_run_says_so_once_with_a_resume_hint_that_pastes(tmp_path, image_folder, monkeypatch):
    import shlex

    from fastgr.training import RunLog

    original = RunLog.after_epoch

    def ctrl_c(self):
        original(self)
        raise KeyboardInterrupt

    monkeypatch.setattr(RunLog, "after_epoch", ctrl_c)
    out = tmp_path / "my runs" / "a run"
    r = runner.invoke(app, ["train", str(image_folder), "--epochs", "2", "--img-size", "8", "--out", str(out)])
    assert r.exit_code == 130
    text = r.output.replace(str(tmp_path), "TMP")  # the test's own folder name has the word in it
    said = [ln for ln in text.splitlines() if "interrupted" in ln]
    assert said == ["interrupted"], said
    hint = f"fastgr train --out {shlex.quote(str(out))} --resume"
    assert hint in flat(r.stdout)
    assert shlex.split(hint)[3] == str(out)


def test_fit_of_the_true_labels_is_not_shown_when_the_truth_is_unknown(tmp_path, image_folder):
    out = tmp_path / "run"
    r = runner.invoke(app, ["train", str(image_folder), "--epochs", "1", "--img-size", "8", "--out", str(out)])
    assert r.exit_code == 0 and "fit given" in r.stdout and "fit true" not in r.stdout
    metrics = pd.read_csv(out / "metrics.csv")
    assert "train_acc_given" in metrics and "train_acc_true" not in metrics


def test_a_first_run_says_it_is_compiling_and_later_runs_are_quiet(tmp_path, monkeypatch):
    import compileall
    import io
    import sys

    import fastgr.cli.base as base
    from rich.console import Console

    pkg = tmp_path / "fresh_pkg"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("X = 1\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    assert base.bytecode_missing("fresh_pkg")
    compileall.compile_dir(str(pkg), quiet=1)
    assert not base.bytecode_missing("fresh_pkg") and not base.bytecode_missing("no_such_module_here")
    sys.modules.pop("fresh_pkg", None)
    # what a person sees at a terminal: one dim line before the command starts; nothing in logs and pipes
    seen = io.StringIO()
    monkeypatch.setattr(base, "err_console", Console(file=seen, force_terminal=True, width=200))
    monkeypatch.setattr(base, "bytecode_missing", lambda module="torch": True)
    runner.invoke(app, ["models", "cifar_resnet20"])
    assert "Python is compiling torch and fastai before they import" in seen.getvalue()
    monkeypatch.setattr(base, "bytecode_missing", lambda module="torch": False)
    seen.truncate(0)
    runner.invoke(app, ["models", "cifar_resnet20"])
    assert seen.getvalue().strip("\x00") == ""


def test_a_run_folder_that_cannot_be_written_is_named(tmp_path, image_folder, monkeypatch):
    import os

    real_open = os.open

    def read_only(path, flags, *a, **k):
        if str(path).endswith(".fastgr.lock"):
            raise PermissionError(13, "Permission denied", str(path))
        return real_open(path, flags, *a, **k)

    monkeypatch.setattr(os, "open", read_only)
    out = tmp_path / "ro"
    out.mkdir()
    r = runner.invoke(app, ["train", str(image_folder), "--epochs", "1", "--img-size", "8", "--out", str(out)])
    assert r.exit_code == 1 and f"cannot write in the run folder: {out}" in flat(r.stderr)
    assert ".tmp" not in r.stderr and ".fastgr.lock" not in r.stderr


def test_lr_help_says_what_it_accepts(monkeypatch):
    monkeypatch.setenv("COLUMNS", "300")
    text = flat(runner.invoke(app, ["train", "--help"]).stdout)
    assert "Peak learning rate of SGD (momentum 0.9): a finite number > 0." in text


def test_a_loss_with_a_stability_eps_is_not_taken_for_label_smoothing():
    class StableCE(torch.nn.Module):
        eps = 1e-7  # numerical safety, not smoothing

        def forward(self, pred, targ):
            return torch.nn.functional.cross_entropy(pred, targ)

    x, y = linear_problem()
    with pytest.warns(UserWarning, match="GRCallback replaces the gradient of StableCE"):
        fit(make_learner(x, y, bs=8, cbs=[GRCallback()], loss_func=StableCE()))


def test_a_failed_write_names_the_users_file_and_leaves_nothing(tmp_path):
    from fastgr.files import atomic_path

    target = tmp_path / "metrics.csv"
    target.write_text("the older file")
    with pytest.raises(OSError) as e, atomic_path(target) as tmp:
        raise OSError(28, "No space left on device", str(tmp))
    assert e.value.filename == str(target)
    assert target.read_text() == "the older file" and sorted(p.name for p in tmp_path.iterdir()) == ["metrics.csv"]
