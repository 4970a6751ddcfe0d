"""Noisy-label experiments end to end, as library calls: `train_run` is `fastgr train`, `correct_run` is
`fastgr correct`.

A run: check every input, hold the run folder (`RunFolder`), draw or read the labels, resolve GR's setting
(given, the paper's preset, or tuned: `fastgr.tuning`), train (`fastgr.training.train_phase`), optionally relabel
the training set with the model and retrain from scratch (paper, Appendix C), and write `summary.json` last.
Nothing here prints: progress goes to a `Reporter`, results to the run folder and the returned summary.
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

from .config import RunSettings, TrainConfig, resolve_device, resolve_settings, versions
from .correction import correction_report, relabel
from .data import ImageData, load_data
from .issues import learning_verdict, not_learned
from .listing import NO_CLASS
from .noise import NoisyLabels, save_labels, training_labels
from .prediction import predict_with_learner
from .preparation import prepare
from .presets import UNCOVERED_NOISE_WARNING, Setting, default_note, preset_note
from .ranks import check_agree, is_main, processes, world_size
from .record import DataFacts, RunRecord, data_fingerprint
from .runs import Reporter, RunExistsError, RunFolder
from .training import PhaseResult, train_phase
from .tuning import tune

__all__ = ["TrainConfig", "Reporter", "train_run", "correct_run", "predict_with_learner", "RunExistsError"]

# summary.json's keys taken from the training phase's result
_FROM_RESULT = ("test_accuracy_final", "test_accuracy_best", "train_accuracy_given", "train_accuracy_true")


def train_run(
    cfg: TrainConfig,  # every setting of the run
    out: str | Path,  # the run folder: config.json, metrics.csv, labels.csv, summary.json, learner.pkl, plots
    overwrite: bool = False,  # replace the run in an existing folder (its other files stay)
    resume: bool = False,  # continue an interrupted run in `out` with its own config.json
    reporter: Reporter | None = None,  # receives progress; None for silence
) -> dict[str, Any]:  # the summary, as written to summary.json
    "Train on noisy labels with GR (or CE), optionally correct the labels and retrain; write the run folder."
    folder = RunFolder(out)
    reporter = reporter or Reporter()
    folder.check(overwrite and not resume, resume)
    saved = folder.read_record() if resume else None
    if saved is not None:
        cfg = saved.config
        if saved.processes != world_size():  # its global batch was processes x bs
            raise ValueError(f"the run trained on {saved.processes} process(es); resume it on as many, not "
                             f"{world_size()}")
    run = prepare(cfg)  # every input is checked before the folder is touched
    data, noisy, setting = run.data, run.labels, run.setting
    if saved is not None:
        _check_same_data(folder, saved, data)

    agree = (data.train_items, noisy.given, noisy.true, data.valid_y)
    with _share(folder, run.device, overwrite and not resume, agree) as (folder, device):
        if not folder.writes:  # a rank after the first: rank 0 reports
            reporter = Reporter()
        # a resumed run keeps its first command
        record = RunRecord(cfg, None, versions(), saved.command if saved else list(sys.argv),
                           DataFacts.of(data, noisy.truth_known), world_size())
        if saved is None:  # written first: a `--tune` run cut while tuning resumes from it
            folder.write_record(record)
        if data.skipped:
            loose = sum(r == NO_CLASS for _, r in data.skipped)
            if len(data.skipped) > loose:
                reporter.note(f"skipped {len(data.skipped) - loose} unreadable image file(s); listed in skipped.txt",
                              "warn")
            if loose:
                reporter.note(f"skipped {loose} image(s) outside the class sub-folders; listed in skipped.txt", "warn")
            folder.write_text("skipped.txt", "".join(f"{p}\t{r}\n" for p, r in data.skipped))
        if run.grid is not None:
            tuned = tune(folder, run, reporter, resume)
            if tuned.get("loss", "gr") == "gr":
                setting = Setting(tuned["lam"], tuned["beta"], f"tuned on {cfg.tune_holdout:.0%} of the noisy "
                                  "training labels (tune.csv)", tuned["warmup"])
                reporter.note(f"tuned: lam={setting.lam:g}, beta={setting.beta:g}, warm-up {setting.warmup:g}")
            else:  # the held-out noisy labels preferred a baseline: the run trains with it, not with GR
                cfg, setting = cfg.replace(loss=tuned["loss"], mixup=0.0), None
                reporter.note(f"tuned: {tuned['loss']} scored best on the held-out noisy labels; training with it, "
                              "not GR (tune.csv)", "warn")
        if cfg.preset and setting is not None:
            reporter.note(preset_note(setting), "warn")
            kind = str(noisy.noise_type) if cfg.labels else cfg.noise_type  # a labels file says what it holds
            if not kind.startswith("symmetric"):
                reporter.note(UNCOVERED_NOISE_WARNING.format(kind=kind), "warn")
        elif setting is not None and (note := default_note(setting)):
            reporter.note(note)
        if cfg.amp and device.type != "cuda":
            reporter.note("--amp needs CUDA; training in float32 on the CPU", "warn")
        resolved = resolve_settings(cfg, device, data, setting)  # once, for every phase
        if saved is None or saved.resolved is None:
            folder.write_record(replace(record, resolved=resolved))
        if folder.writes:
            save_labels(folder / "labels.csv", noisy, data.classes, data.train_items)

        result = train_phase(folder, cfg, resolved, data, noisy, reporter, "train", resume=resume)
        summary: dict[str, Any] = {
            **{k: getattr(result, k) for k in _FROM_RESULT},
            "noise_rate_realised": noisy.realised_rate if noisy.truth_known else None,
            "truth_known": noisy.truth_known,
            "loss": cfg.loss, "lam": resolved.lam, "beta": resolved.beta, "warmup": resolved.warmup,
            "ess_final": result.ess_final, "ess_min": result.ess_min,
            "emphasis_collapse_epochs": result.emphasis_collapse_epochs,
            "skipped_files": len(data.skipped),
        }
        if cfg.correct:
            summary.update(_correct_and_retrain(folder, result, cfg, resolved, data, noisy, reporter, resume))
        # the training work of every session and phase (a resumed run adds up its parts)
        summary["seconds"] = round(folder.training_seconds(), 2)
        folder.write("summary.json", summary)
    return summary


def _check_same_data(folder: RunFolder, saved: RunRecord, data: ImageData) -> None:
    """Refuse to resume a run on other data: a file gone (or added, or relabelled) since it started would move
    examples between the splits and shift every saved per-example sum onto another image."""
    if saved.data.fingerprint is None or saved.data.fingerprint == data_fingerprint(data):
        return  # the same data (or a run of a fastgr that did not record it)
    what = "its items or labels differ"
    if folder.has("labels.csv"):
        import pandas as pd

        before = set(pd.read_csv(folder / "labels.csv", dtype={"item": str}, keep_default_na=False)["item"])
        now = set(data.train_items)
        gone, new = sorted(before - now), sorted(now - before)
        parts = [f"{len(gone)} training image(s) gone, e.g. {gone[0]}" if gone else "",
                 f"{len(new)} new, e.g. {new[0]}" if new else ""]
        what = "; ".join(p for p in parts if p) or what
    raise ValueError(f"the data changed since this run started ({what}): resuming would train on other examples; "
                     "restore the data, or start again with --overwrite")


@contextlib.contextmanager
def _share(folder: RunFolder, device, overwrite: bool, agree: tuple) -> Iterator[tuple[RunFolder, Any]]:
    """This process's share of a run: launched alone, all of it; as a rank of a launch (torchrun, accelerate), it
    joins the process group and trains on its own device, rank 0 holding and writing the folder, the others reading
    it only (a resumed run's checkpoint). The ranks first check that they hold the same `agree` (data, labels):
    before the folder is touched, so a disagreement loses nothing."""
    with processes(device) as dev:
        check_agree("the data and its labels", *agree)
        mine = folder if is_main() else RunFolder(folder.path, writes=False)
        with mine.open(overwrite=overwrite):
            yield mine, dev


def _correct_and_retrain(folder: RunFolder, result: PhaseResult, cfg: TrainConfig, resolved: RunSettings,
                         data: ImageData, noisy: NoisyLabels, reporter: Reporter, resume: bool) -> dict[str, Any]:
    "The paper's Table 9 protocol: relabel where the model disagrees, retrain from scratch with the same settings."
    probs = result.probs
    if probs is None:  # the phase finished in an earlier session: its exported model predicts again
        probs = predict_with_learner(folder / "learner.pkl", data, resolved.device)
    if why := learning_verdict(result.test_accuracy_final, result.train_accuracy_given, noisy.given,
                               len(data.valid_y)):
        reporter.note(f"{why}; no label relabelled, no retraining (`fastgr correct --force` relabels anyway)", "error")
        return {"correction_skipped": why}
    corrected = relabel(probs, noisy.given, cfg.correct_threshold)
    report = correction_report(noisy.given, corrected, noisy.truth, probs.argmax(1).numpy())
    folder.write("correction.json", report)
    if folder.writes:
        save_labels(folder / "labels.csv", noisy, data.classes, data.train_items, {"corrected_label": corrected})
    reporter.note(f"relabelled {report['relabelled']} of {report['n']} training labels "
                  f"({report['relabelled_fraction']:.1%}); retraining from scratch")
    retrain_labels = NoisyLabels(corrected, noisy.true, "corrected", noisy.rate, noisy.seed,
                                 truth_known=noisy.truth_known)
    after = train_phase(folder.sub("retrain"), cfg, resolved, data, retrain_labels, reporter, "retrain", resume=resume)
    return {
        "relabelled_fraction": report["relabelled_fraction"],
        "correction_precision": report["correction_precision"],
        "correction_recall": report["correction_recall"],
        "noise_rate_after_correction": report["noise_rate_after"],
        "test_accuracy_after_correction": after.test_accuracy_final,
        "test_accuracy_best_after_correction": after.test_accuracy_best,
    }


def correct_run(
    run_dir: str | Path,  # a finished `fastgr train` run folder
    data: str | Path | None = None,  # data to relabel; the run's own training data if None
    threshold: float = 0.0,  # relabel only where the model's confidence is at least this
    out: str | Path | None = None,  # the corrected labelling; run_dir/labels_corrected.csv if None
    overwrite: bool = False,  # replace an existing `out`
    force: bool = False,  # relabel with a model that has not learned anything (`fastgr.issues.not_learned`)
) -> dict[str, Any]:  # the correction report, also written beside `out` as JSON
    """Relabel a training set with a trained run's model. The output is a labelling for `train --labels`: its
    given_label is the corrected label, its true_label the truth where known."""
    run = RunFolder(run_dir)
    if not run.has("learner.pkl") or not run.has("config.json"):
        raise FileNotFoundError(2, "not a finished fastgr run (config.json and learner.pkl needed)", str(run_dir))
    saved = run.read_record()
    cfg = saved.config
    if not force and run.has("labels.csv") and (why := not_learned(run.path)):
        raise ValueError(f"{why}; nothing relabelled (--force relabels anyway)")
    out = Path(out) if out is not None else run.path / "labels_corrected.csv"
    report_path = out.with_suffix(".report.json")
    for p in (out, report_path):
        if p.exists() and p.is_dir():
            raise RunExistsError(f"{p} is a folder, not a file")
        if p.exists() and not overwrite:
            raise RunExistsError(f"{p} exists; pass --overwrite to replace it")
    own = data is None or str(data) == str(cfg.data)
    loaded = load_data(cfg.data if own else data, saved.data.img_size, cfg.valid_pct, cfg.seed, cfg.classes,
                       cfg.in_memory)
    if loaded.classes != saved.data.classes:
        raise ValueError(f"the data's classes ({len(loaded.classes)}) differ from the run's "
                         f"({len(saved.data.classes)})")
    if own:
        if not run.has("labels.csv"):  # the labels it trained on are unknown: never assume them
            raise FileNotFoundError(2, "the run's labels.csv is missing: the labels it trained on are unknown",
                                    str(run.path / "labels.csv"))
        # the record knows whether the run's truth was known (a labels.csv of an older fastgr does not say)
        noisy = replace(training_labels(loaded, labels_file=run.path / "labels.csv"),
                        truth_known=saved.data.truth_known)
    else:
        noisy = training_labels(loaded)
    probs = predict_with_learner(run.path / "learner.pkl", loaded, str(resolve_device(None)))
    corrected = relabel(probs, noisy.given, threshold)
    report = correction_report(noisy.given, corrected, noisy.truth, probs.argmax(1).numpy())
    report.update(run=str(run_dir), data=str(loaded.name), threshold=threshold, labels=str(out))
    relabelled = NoisyLabels(corrected, noisy.true, "corrected", noisy.rate, noisy.seed,
                             {"corrected_by": str(run_dir)}, noisy.truth_known)
    # the labels the run trained on go beside the corrected ones
    save_labels(out, relabelled, loaded.classes, loaded.train_items, {"original_label": noisy.given})
    RunFolder(report_path.parent).write(report_path.name, report)
    return report
