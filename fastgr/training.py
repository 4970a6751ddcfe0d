"""One training phase from scratch into one folder: the run itself, a tuning setting, or the retraining after
label correction. `train_phase` resumes an interrupted phase and returns a `PhaseResult`; `RunLog`, its fastai
callback, writes each epoch's row and checkpoint into the phase's `RunFolder`.
"""

from __future__ import annotations

import contextlib
import math
import time
import warnings
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
import torch
from fastai.callback.core import Callback
from fastai.torch_core import get_random_states, set_random_states, set_seed

from .config import RunSettings, TrainConfig
from .data import ImageData
from .dataloaders import make_dataloaders
from .dynamics import TrainingDynamics
from .finetune import model_stats
from .handover import Handover
from .issues import ISSUES_FILE, rank_label_issues
from .learner import gr_learner, predict_probs, unwrapped
from .monitor import EmphasisCollapseWarning, EmphasisMonitor
from .noise import NoisyLabels
from .ranks import rank_device, world_size
from .report import Reporter
from .runs import RunFolder
from .schedule import fit_epoch, fit_schedule, training_span
from .signals import NoiseSignals
from .stream import UnreadableFileWarning
from .telemetry import FitMonitor

__all__ = ["PhaseResult", "RunLog", "TrainingDiverged", "train_phase"]


class TrainingDiverged(RuntimeError):
    "The loss became NaN or infinite: the run stops at that epoch, its last finite checkpoint kept."

# result.json's keys: what a finished phase tells the run (and a resumed run reads back)
RESULT_KEYS = ("test_accuracy_final", "test_accuracy_best", "train_accuracy_given", "train_accuracy_true", "epochs",
               "ess_final", "ess_min", "emphasis_collapse_epochs", "seconds")
# a tuning candidate's predicted class for each held-out image: its ranking can be checked against any labelling of
# the held-out part (the truth, where known) without training it again
HOLDOUT_FILE = "holdout_pred.csv"


def _stateful(cb) -> bool:
    # on the class: a fastai Callback answers unknown attributes from its Learner
    return callable(getattr(type(cb), "state_dict", None)) and callable(getattr(type(cb), "load_state_dict", None))


class RunLog(Callback):
    """Writes a fit's epochs into a `RunFolder`: a row of metrics.csv and a checkpoint after every training epoch.

    Owns the rows; `state` restores a checkpoint (model, optimiser, random states, the rows, and every callback's
    `state_dict`), after which `fit_one_cycle(..., start_epoch=epoch)` goes on as the uninterrupted fit would."""

    order = 70  # after the Recorder (50) has the epoch's values

    def __init__(
        self,
        folder: RunFolder,  # where metrics.csv and checkpoint.pth go
        reporter: Reporter | None = None,  # told of every batch and epoch
    ):
        self.folder, self.reporter = folder, reporter or Reporter()
        self.rows: list[dict] = []
        self.elapsed = 0.0  # seconds of training, over every session of a resumed run
        self._smooth_loss: tuple | None = None
        self._restored = 0  # the epoch of the checkpoint restored

    # -- checkpoints --------------------------------------------------------------------------------
    def save(self, epoch: int) -> None:
        if not self.folder.writes:  # a rank after the first: rank 0 saves what every rank holds
            return
        learn = self.learn
        sl = learn.recorder.smooth_loss
        cbs = {type(cb).__name__: cb.state_dict() for cb in learn.cbs if _stateful(cb)}
        self.folder.save_checkpoint({
            "epoch": epoch, "model": unwrapped(learn.model).state_dict(), "opt": learn.opt.state_dict(),
            "rng": get_random_states(), "rows": self.rows, "elapsed": self.elapsed,
            "smooth_loss": (sl.val, sl.count), "callbacks": cbs})

    def restore(self, learn) -> int:
        "Load the folder's checkpoint into `learn`, if there is one; the epoch to start from."
        state = self.folder.load_checkpoint()
        if state is None:
            return 0
        unwrapped(learn.model).load_state_dict(state["model"])
        learn.create_opt()
        learn.opt.load_state_dict(state["opt"])
        set_random_states(**state["rng"])
        self.rows, self.elapsed = list(state["rows"]), float(state["elapsed"])
        self._smooth_loss, self._restored = state["smooth_loss"], int(state["epoch"])
        for cb in learn.cbs:
            if _stateful(cb) and type(cb).__name__ in state["callbacks"]:
                cb.load_state_dict(state["callbacks"][type(cb).__name__])
        return int(state["epoch"])

    # -- fastai events ------------------------------------------------------------------------------
    def before_fit(self):
        # the logged train_loss is a moving average over batches, restarted by every fit: a resumed fit continues
        # it, unless the checkpoint closed the fit before (a fine-tuning cut after its head's epochs)
        if self._smooth_loss is not None and training_span(self.learn).offset < self._restored:
            sl = self.learn.recorder.smooth_loss
            sl.val, sl.count = self._smooth_loss
        self._smooth_loss = None

    def before_epoch(self):
        self.trained = False
        self.t0 = time.perf_counter()

    def before_train(self):
        self.trained = True  # fastai's SkipToEpoch cancels skipped epochs before this

    def after_batch(self):
        if self.training:
            self.reporter.batch(self.iter + 1, self.n_iter)

    def after_epoch(self):
        if not self.trained:
            return
        rec = self.learn.recorder
        epoch = fit_epoch(self.learn) + 1  # over the whole training (a fine-tuning's two fits)
        row = {"epoch": epoch}
        for name, v in zip(rec.metric_names[1:], rec.log[1:]):
            if name != "time":
                row[name] = None if v is None else float(v)
        row["seconds"] = round(time.perf_counter() - self.t0, 3)
        losses = [row.get(k) for k in ("train_loss", "valid_loss")]
        if any(v is None or not math.isfinite(v) for v in losses):  # read once an epoch: no sync in the steps
            raise TrainingDiverged(f"training diverged at epoch {row['epoch']} (loss {losses[0]}): lower --lr; "
                                   f"the last finite epoch is kept in {self.folder.path}")
        self.rows.append(row)
        self.elapsed += row["seconds"]
        self.folder.write_csv("metrics.csv", pd.DataFrame(self.rows))
        self.save(epoch)
        self.reporter.epoch(row)


@dataclass(frozen=True)
class PhaseResult:
    "What a training phase produced; `probs` and `examples` only when it trained in this session."

    test_accuracy_final: float | None  # held-out accuracy after the last epoch
    test_accuracy_best: float | None  # the best epoch's (needs clean held-out labels: for reference)
    train_accuracy_given: float  # the trained model's accuracy on the labels it trained on
    train_accuracy_true: float | None  # ... on the true labels, where known
    epochs: int  # epochs trained
    ess_final: float | None  # GR's effective sample size in the last epoch
    ess_min: float | None  # ... its smallest epoch mean
    emphasis_collapse_epochs: int  # epochs in an emphasis collapse
    seconds: float  # training seconds, over every session of a resumed phase
    probs: torch.Tensor | None = field(default=None, repr=False)  # (N, C) training-set probabilities
    holdout_pred: np.ndarray | None = field(default=None, repr=False)  # (M,) a light phase's held-out classes
    examples: pd.DataFrame | None = field(default=None, repr=False)  # GR's last-epoch examples, with the truth

    def to_dict(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in RESULT_KEYS}

    @classmethod
    def from_dict(cls, d: dict) -> PhaseResult:
        return cls(**{k: d[k] for k in RESULT_KEYS})


def train_phase(
    folder: RunFolder,  # where the phase's files go
    cfg: TrainConfig,  # the run's config (model, schedule, seed)
    resolved: RunSettings,  # what it resolved to (device, GR's setting)
    data: ImageData,  # the decoded data
    labels: NoisyLabels,  # the labels to train on (`given`) and the truth (where `labels.truth_known`)
    reporter: Reporter,  # told of progress
    name: str,  # the phase's name for the reporter
    light: bool = False,  # a tuning run: no exported learner, examples or plots
    resume: bool = False,  # go on from the folder's checkpoint, or read its finished result
) -> PhaseResult:
    "Train from scratch (or from the folder's checkpoint) and write the phase's files; `result.json` comes last."
    if resume and folder.has("result.json"):
        folder.remove("checkpoint.pth")  # a kill between the two left it
        return PhaseResult.from_dict(folder.read("result.json"))
    folder.mkdir()
    set_seed(cfg.seed)
    device = rank_device(resolved.device)  # cuda:LOCAL_RANK for a rank of a launch
    # pretrained weights expect the inputs normalised as they were trained (what `vision_learner` adds)
    stats = model_stats(cfg.arch) if cfg.finetune and data.channels == 3 else None
    dls = make_dataloaders(data, labels.given, cfg.bs, device, cfg.seed, resolved.augment,
                           channels_last=device.type == "cuda", stats=stats, balanced=cfg.balanced)
    log = RunLog(folder, reporter)
    gr = dict(loss="gr", lam=None if resolved.auto else resolved.lam, beta=None if resolved.auto else resolved.beta,
              warmup=resolved.warmup, warmup_mode=resolved.warmup_mode) if resolved.gr else \
        dict(loss=cfg.loss, mixup=cfg.mixup)  # lam and beta None: GRCallback's automatic setting (--auto)
    learn = gr_learner(dls, cfg.arch, **gr, eps=cfg.eps, pretrained=cfg.pretrained, weights=cfg.weights, lr=cfg.lr,
                       wd=cfg.wd, amp=resolved.amp, compile=cfg.compile, true_labels=labels.truth,
                       record_examples=not light, record_dynamics=not light, cbs=[log])
    start = log.restore(learn) if resume else 0
    reporter.phase(name, cfg.total_epochs, start)
    if start < cfg.total_epochs:
        with learn.no_bar(), learn.no_logging(), warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", EmphasisCollapseWarning)
            warnings.filterwarnings("ignore", message=".*CUDA is not available.*")
            with _sharded(learn):  # every rank of a launch; alone, as it is
                fit_schedule(learn, cfg.epochs, cfg.lr, cfg.finetune, cfg.head_epochs, start_epoch=start)
        for w in caught:  # the reporter (the CLI: in red) and then Python's own warning machinery
            if issubclass(w.category, EmphasisCollapseWarning):
                reporter.note(str(w.message), "error")
            if not issubclass(w.category, UnreadableFileWarning):  # said once, below, with the count
                warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
        _report_unreadable(folder, learn.dls.train, reporter)
    if isinstance(h := getattr(learn, "handover", None), Handover):  # what --auto decided, and when (gr_share)
        reporter.note(h.decision())
    return _finish(folder, learn, log, labels, light, resolved, data)


def _report_unreadable(folder: RunFolder, dl, reporter: Reporter) -> None:
    "Files that were read when the run started but not while it trained (changed on disk): skipped, counted, listed."
    failed = getattr(dl, "unreadable", None) or getattr(getattr(dl, "dl", None), "unreadable", None) or []
    if not failed:
        return
    reporter.note(f"skipped {len(failed)} image file(s) that could not be read while training, e.g. {failed[0][0]} "
                  f"({failed[0][1]}); listed in skipped.txt", "warn")
    top = folder.top
    old = (top / "skipped.txt").read_text() if top.has("skipped.txt") else ""
    top.write_text("skipped.txt", old + "".join(f"{p}\t{r}\n" for p, r in failed if f"{p}\t" not in old))


def _sharded(learn):
    "Fit on every rank of a launch of several processes (`fastgr.distributed`, which needs accelerate); alone, as is."
    if world_size() <= 1:
        return contextlib.nullcontext(learn)
    from .distributed import sharded_training

    return sharded_training(learn)


def _finish(folder: RunFolder, learn, log: RunLog, labels: NoisyLabels, light: bool, resolved: RunSettings,
            data: ImageData) -> PhaseResult:
    t0 = time.perf_counter()
    probs = predict_probs(learn)
    pred = probs.argmax(1).numpy()
    rows = log.rows
    accs = [r["test_acc"] for r in rows if r.get("test_acc") is not None]
    ess = [r["gr_ess"] for r in rows if r.get("gr_ess") is not None]
    gr = next((cb for cb in learn.cbs if isinstance(cb, EmphasisMonitor)), None)  # GR's weights, epoch by epoch
    holdout_pred = None
    if light:  # written before result.json: a finished candidate read back on resume has it too
        holdout_pred = predict_probs(learn, learn.dls.valid).argmax(1).numpy()
        items = data.valid_items or [str(i) for i in range(len(holdout_pred))]
        folder.write_csv(HOLDOUT_FILE, pd.DataFrame({"item": items, "given": np.asarray(data.valid_y),
                                                     "pred": holdout_pred}))
    examples = None
    if gr is not None and gr.examples is not None:
        ex = gr.examples
        idx = ex["idx"].to_numpy()
        ex = ex[idx >= 0]
        idx = idx[idx >= 0]
        examples = ex.assign(true=labels.true[idx], flipped=labels.flipped[idx].astype(int))
    if not light:
        if examples is not None:
            folder.write_csv("examples.csv", examples)
        if gr is not None:
            gr.examples = None  # in examples.csv; not part of the model file
        dyn = next((cb for cb in learn.cbs if isinstance(cb, TrainingDynamics)), None)
        if dyn is not None:
            aum, mean_p = dyn.values()  # on every rank: the sums are added over the ranks
        if dyn is not None and folder.writes:
            folder.write_csv(ISSUES_FILE, rank_label_issues(labels.given, probs, aum, mean_p, data.train_items,
                                                            data.classes, labels.truth))
        model, learn.model = learn.model, unwrapped(learn.model)  # the model itself, not a compiled wrapper
        try:
            folder.export(learn, drop=(RunLog, FitMonitor, TrainingDynamics, NoiseSignals, Handover))
        finally:
            learn.model = model
        if folder.writes:
            _plots(folder, rows, examples, resolved, labels.truth_known)
    log.elapsed += time.perf_counter() - t0
    result = PhaseResult(
        test_accuracy_final=accs[-1] if accs else None, test_accuracy_best=max(accs) if accs else None,
        train_accuracy_given=float((pred == labels.given).mean()),
        train_accuracy_true=float((pred == labels.true).mean()) if labels.truth_known else None,
        epochs=len(rows), ess_final=ess[-1] if ess else None, ess_min=min(ess) if ess else None,
        emphasis_collapse_epochs=len(gr.collapsed_epochs) if gr is not None else 0,
        seconds=round(log.elapsed, 2), probs=probs, holdout_pred=holdout_pred, examples=examples)
    folder.write("result.json", result.to_dict())
    folder.remove("checkpoint.pth")  # the phase is done: learner.pkl (or result.json) replaces it
    return result


def _plots(folder: RunFolder, rows: list[dict], examples: pd.DataFrame | None, resolved: RunSettings,
           truth_known: bool) -> None:
    from .plots import plot_learning_curves, plot_weight_vs_p, plot_weights_flipped_clean

    folder.save_figure("curves.png", plot_learning_curves(pd.DataFrame(rows), title=folder.path.name))
    if examples is not None and len(examples):
        folder.save_figure("weights_vs_p.png", plot_weight_vs_p(examples, resolved.lam))
        if truth_known and np.any(examples["flipped"]):
            folder.save_figure("weights_flipped_clean.png", plot_weights_flipped_clean(examples))
