"""Noisy-label experiments end to end, as library calls: data, label noise, a timm backbone, GR or plain
cross-entropy, label correction and retraining, and a run folder that survives interruptions.

`train_run(TrainConfig(...), "runs/x")` is what `fastgr train` does; `correct_run` is `fastgr correct`. Nothing
here prints: progress goes to a `Reporter`, results to the run folder and the returned summary.
"""

from __future__ import annotations

import json
import platform
import random
import sys
import time
import warnings
from dataclasses import asdict, dataclass, field, fields
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from fastai.callback.core import Callback
from fastai.callback.fp16 import MixedPrecision
from fastai.callback.schedule import fit_one_cycle  # noqa: F401  (patches Learner.fit_one_cycle)
from fastai.learner import CancelEpochException, Learner, load_learner
from fastai.losses import CrossEntropyLossFlat
from fastai.metrics import AvgMetric
from fastai.optimizer import SGD

from .callback import WARMUP_MODES, EmphasisCollapseWarning, GRCallback
from .correction import correction_report, relabel
from .data import AUGMENTS, ImageData, TensorDL, load_data, make_dataloaders
from .models import create_model
from .noise import NOISE_TYPES, NoisyLabels, add_noise, load_labels, save_labels
from .presets import (
    BUDGET_WARNING,
    DEFAULT_WARMUP,
    FIXED_DEFAULT,
    REFERENCE_EPS,
    TUNE_GRID,
    Setting,
    paper_setting,
)
from .runs import Reporter, atomic_path, read_json, write_json, write_text
from .telemetry import FitMonitor

__all__ = ["TrainConfig", "Reporter", "train_run", "tune_run", "correct_run", "training_labels", "resolve_device",
           "DEMO_NOISE", "TUNE_GRID", "RunExistsError"]

LOSSES = ("gr", "ce")
DEMO_NOISE = 0.4  # digits is the offline demo: by default it trains on 40% symmetric noise



class RunExistsError(FileExistsError):
    "The run folder is in use; nothing was written."


@dataclass
class TrainConfig:
    "Every setting of a training run; `config.json` stores it with the values each `None` resolved to."

    data: str = "digits"  # digits, cifar10, cifar100, an image folder or a CSV of path,label[,is_valid]
    arch: str = "cifar_resnet20"  # any timm model name; cifar_resnet20/32/44/56/110 included
    pretrained: bool = False  # start from timm's pretrained weights
    noise: float | None = None  # fraction of training labels to corrupt; None: 0.4 on digits, else 0
    noise_type: str = "symmetric"  # symmetric, pairflip or asymmetric
    labels: str | None = None  # a noisy-label CSV from `fastgr noise` to train on instead of drawing noise
    loss: str = "gr"  # gr (gradient rescaling) or ce (plain cross-entropy, the baseline)
    lam: float | None = None  # emphasis focus parameter; None: the preset's or the fixed default 0.5
    beta: float | None = None  # emphasis spread parameter; None: the preset's or the fixed default 8
    preset: bool = False  # lam and beta from the paper's table by noise rate and class count
    epochs: int = 30  # training epochs (one-cycle schedule)
    lr: float = 0.1  # peak learning rate of SGD (momentum 0.9)
    bs: int = 128  # batch size
    wd: float = 5e-4  # L2 weight decay
    img_size: int | None = None  # image side; digits 16, CIFAR 32, folders: the first image's size
    augment: str | None = None  # crop+flip, crop or none; digits none, others crop+flip
    valid_pct: float = 0.2  # held-out fraction for a folder or CSV without its own split
    classes: list[str] | None = None  # class names in label order (folder or CSV)
    seed: int = 0  # seed of the noise draw, the split, the initialisation and the batches
    device: str | None = None  # cpu, cuda, cuda:1...; None: cuda when available
    amp: bool | None = None  # bf16 mixed precision; None: on for CUDA
    correct: bool = False  # then relabel the training set with the model and retrain from scratch
    correct_threshold: float = 0.0  # relabel only where the model's confidence is at least this
    eps: float = REFERENCE_EPS  # the reference layer's saturation of GR's direction; 0: the bare formula
    warmup: float | None = None  # fraction of training over which GR takes over from CE; None: the setting's
    warmup_mode: str = "blend"  # blend (a*G_GR + (1-a)*G_CE) or ramp (lam, beta from 0, 2)
    tune: bool = False  # first pick lam and beta with `tune_run` on a held-out part of the noisy training set
    tune_holdout: float = 0.2  # that held-out fraction
    extra: dict[str, Any] = field(default_factory=dict)  # settings of later features, kept verbatim

    def validate(self) -> None:
        "Raise a `ValueError` naming the first bad setting."
        if self.noise is not None and not 0 <= self.noise < 1:
            raise ValueError(f"noise rate must be in [0, 1), got {self.noise}")
        if self.noise_type not in NOISE_TYPES:
            raise ValueError(f"unknown noise type {self.noise_type!r}; choose one of {', '.join(NOISE_TYPES)}")
        if self.loss not in LOSSES:
            raise ValueError(f"unknown loss {self.loss!r}; choose gr or ce")
        if self.augment is not None and self.augment not in AUGMENTS:
            raise ValueError(f"unknown augment {self.augment!r}; choose one of {', '.join(AUGMENTS)}")
        for name in ("epochs", "bs"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1")
        if self.lr <= 0 or self.wd < 0:
            raise ValueError("lr must be > 0 and wd >= 0")
        if self.img_size is not None and self.img_size < 4:
            raise ValueError("img_size must be >= 4")
        if not 0 <= self.correct_threshold <= 1:
            raise ValueError("correct_threshold must be in [0, 1]")
        if self.warmup is not None and not 0 <= self.warmup <= 1:
            raise ValueError(f"warmup must be a fraction of training in [0, 1], got {self.warmup}")
        if self.warmup_mode not in WARMUP_MODES:
            raise ValueError(f"unknown warmup mode {self.warmup_mode!r}; choose one of {', '.join(WARMUP_MODES)}")
        if not 0 < self.tune_holdout < 1:
            raise ValueError(f"tune_holdout must be in (0, 1), got {self.tune_holdout}")
        if self.eps < 0:
            raise ValueError(f"eps must be >= 0, got {self.eps}")
        for name in ("lam", "beta"):
            v = getattr(self, name)
            if v is not None and v < 0:
                raise ValueError(f"{name} must be >= 0, got {v}")

    @classmethod
    def from_dict(cls, d: dict) -> TrainConfig:
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in names})


# -- settings ------------------------------------------------------------------------------------------

def resolve_device(name: str | None) -> torch.device:
    "The training device: `name`, or CUDA when available, else the CPU; an unavailable device is an error."
    if name is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(name)
    except RuntimeError:
        raise ValueError(f"unknown device {name!r}; use cpu, cuda or cuda:N") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {name} asked for, but CUDA is not available here; use --device cpu")
    if dev.type not in ("cpu", "cuda"):
        raise ValueError(f"device type {dev.type} is not supported; use cpu or cuda")
    return dev


def _gr_setting(cfg: TrainConfig, noise_rate: float | None, n_classes: int) -> Setting | None:
    if cfg.loss == "ce":
        return None
    base = paper_setting(noise_rate, n_classes) if cfg.preset else FIXED_DEFAULT
    if cfg.lam is None and cfg.beta is None:
        setting = base
    elif cfg.lam is not None and cfg.beta is not None:
        setting = Setting(cfg.lam, cfg.beta, "given", DEFAULT_WARMUP)
    else:
        lam = base.lam if cfg.lam is None else cfg.lam
        beta = base.beta if cfg.beta is None else cfg.beta
        setting = Setting(lam, beta, f"given + {base.source}", base.warmup)
    return setting if cfg.warmup is None else setting._replace(warmup=cfg.warmup)


def _versions() -> dict[str, str]:
    import fastai
    import timm

    from . import __version__

    return {"fastgr": __version__, "fastai": fastai.__version__, "torch": torch.__version__,
            "timm": timm.__version__, "python": platform.python_version()}


def _seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def _rng_state() -> dict:
    state = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


# -- labels --------------------------------------------------------------------------------------------

def training_labels(
    data: ImageData,  # the decoded data
    noise: float = 0.0,  # fraction of labels to corrupt
    noise_type: str = "symmetric",  # symmetric, pairflip or asymmetric
    seed: int = 0,  # seed of the draw
    labels_file: str | Path | None = None,  # a noisy-label CSV to use instead of drawing
) -> tuple[NoisyLabels, bool]:  # the labelling, and whether its true labels are known to be right
    "The labels a run trains on, with the truth beside them."
    y = data.train_y.numpy()
    if labels_file is not None:
        noisy, items, _ = load_labels(labels_file, data.classes)
        pos = {item: i for i, item in enumerate(items)}
        missing = [it for it in data.train_items if it not in pos]
        if missing:
            raise ValueError(f"{labels_file} does not match the data: {len(missing)} training item(s) missing, "
                             f"e.g. {missing[0]!r}")
        order = np.array([pos[it] for it in data.train_items])
        given, true = noisy.given[order], noisy.true[order]
        if not np.array_equal(true, y):
            raise ValueError(f"{labels_file}: its true labels differ from the data's on "
                             f"{int((true != y).sum())} item(s); it was drawn for other data")
        return NoisyLabels(given, true, noisy.noise_type, noisy.rate, noisy.seed, {"file": str(labels_file)}), True
    if noise > 0:
        return add_noise(y, noise, data.n_classes, noise_type, seed), True
    return NoisyLabels(y, y, "none", 0.0, seed), data.labels_trusted


# -- fastai pieces -------------------------------------------------------------------------------------

class ResumableLearner(Learner):
    "A `Learner` whose `fit` can start at `first_epoch`, with the schedule where it left off."

    first_epoch = 0

    def _do_fit(self):
        for epoch in range(self.first_epoch, self.n_epoch):
            self.epoch = epoch
            self._with_events(self._do_epoch, "epoch", CancelEpochException)


class EpochLog(Callback):
    "After every training epoch: a row to metrics.csv, a checkpoint to resume from, the row to the reporter."

    order = 70  # after the Recorder (50) has the epoch's values

    def __init__(self, phase: _Phase):
        self.phase = phase

    def before_fit(self):
        # the logged train_loss is a moving average over batches: a resumed run continues it
        if self.phase.smooth_loss is not None:
            sl = self.learn.recorder.smooth_loss
            sl.val, sl.count = self.phase.smooth_loss

    def before_epoch(self):
        self.trained = False
        self.learn.dls.train.epoch = self.epoch  # batches depend on (seed, epoch) only
        self.t0 = time.perf_counter()

    def before_train(self):
        self.trained = True

    def after_batch(self):
        if self.training:
            self.phase.reporter.batch(self.iter + 1, self.n_iter)

    def after_epoch(self):
        if not self.trained:  # fastai's validate/get_preds fire epoch events too
            return
        rec = self.learn.recorder
        row = {"epoch": self.epoch + 1}
        for name, v in zip(rec.metric_names[1:], rec.log[1:]):
            if name != "time":
                row[name] = None if v is None else float(v)
        row["seconds"] = round(time.perf_counter() - self.t0, 3)
        self.phase.rows.append(row)
        self.phase.elapsed += row["seconds"]
        self.phase.write_metrics()
        self.phase.save_checkpoint(self.learn, self.epoch + 1)
        self.phase.reporter.epoch(row)


def test_acc(inp: torch.Tensor, targ: torch.Tensor) -> torch.Tensor:
    "Accuracy on the held-out split (its labels are never corrupted)."
    return (inp.argmax(dim=1) == targ).float().mean()


class _Phase:
    "One training from scratch into one folder: the run itself, or its retraining after correction."

    def __init__(self, folder: Path, cfg: TrainConfig, settings: dict, data: ImageData, noisy: NoisyLabels,
                 truth_known: bool, reporter: Reporter, name: str):
        self.folder, self.cfg, self.settings, self.data = folder, cfg, settings, data
        self.noisy, self.truth_known, self.reporter, self.name = noisy, truth_known, reporter, name
        self.rows: list[dict] = []
        self.elapsed = 0.0
        self.smooth_loss: tuple | None = None
        self.ckpt = folder / "checkpoint.pth"
        self.light = False  # tuning runs: no exported learner, examples or plots

    # files
    def write_metrics(self) -> None:
        with atomic_path(self.folder / "metrics.csv") as tmp:
            pd.DataFrame(self.rows).to_csv(tmp, index=False)

    def save_checkpoint(self, learn, epoch: int) -> None:
        sl = learn.recorder.smooth_loss
        state = {"epoch": epoch, "model": learn.model.state_dict(), "opt": learn.opt.state_dict(),
                 "rng": _rng_state(), "rows": self.rows, "elapsed": self.elapsed, "smooth_loss": (sl.val, sl.count)}
        gr = self._gr(learn)
        if gr is not None:
            state["gr_history"], state["gr_collapsed"] = gr.history, gr.collapsed_epochs
        with atomic_path(self.ckpt) as tmp:
            torch.save(state, tmp)

    @staticmethod
    def _gr(learn):
        return next((cb for cb in learn.cbs if isinstance(cb, GRCallback)), None)

    # training
    def build(self) -> ResumableLearner:
        s, cfg = self.settings, self.cfg
        _seed_everything(cfg.seed)
        device = torch.device(s["device"])
        cuda = device.type == "cuda"
        dls = make_dataloaders(self.data, self.noisy.given, cfg.bs, device, cfg.seed, s["augment"],
                               channels_last=cuda)
        model = create_model(cfg.arch, self.data.n_classes, self.data.channels, cfg.pretrained)
        if cuda:
            model = model.to(device, memory_format=torch.channels_last)
        cbs = [FitMonitor(torch.as_tensor(self.noisy.true)), EpochLog(self)]
        if s["lam"] is not None:
            cbs.append(GRCallback(s["lam"], s["beta"], record_examples=not self.light, eps=cfg.eps,
                                  warmup=s["warmup"], warmup_mode=cfg.warmup_mode))
        if s["amp"]:
            cbs.append(MixedPrecision(amp_mode="bf16"))
        opt = partial(SGD, mom=0.9, decouple_wd=False)
        return ResumableLearner(dls, model, loss_func=CrossEntropyLossFlat(), opt_func=opt,
                                metrics=[AvgMetric(test_acc)], wd=cfg.wd, wd_bn_bias=False, cbs=cbs)

    def resume_from_checkpoint(self, learn) -> int:
        if not self.ckpt.exists():
            return 0
        state = torch.load(self.ckpt, map_location="cpu", weights_only=False)
        learn.model.load_state_dict(state["model"])
        learn.create_opt()
        learn.opt.load_state_dict(state["opt"])
        _set_rng_state(state["rng"])
        self.rows, self.elapsed = list(state["rows"]), float(state["elapsed"])
        self.smooth_loss = state["smooth_loss"]
        gr = self._gr(learn)
        if gr is not None:
            gr.history = list(state.get("gr_history", []))
            gr.collapsed_epochs = list(state.get("gr_collapsed", []))
        return int(state["epoch"])

    def run(self, resume: bool) -> dict:
        self.folder.mkdir(parents=True, exist_ok=True)
        learn = self.build()
        start = self.resume_from_checkpoint(learn) if resume else 0
        cfg = self.cfg
        self.reporter.phase(self.name, cfg.epochs, start)
        learn.first_epoch = start
        t0 = time.perf_counter()
        if start < cfg.epochs:
            with learn.no_bar(), learn.no_logging(), warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always", EmphasisCollapseWarning)
                warnings.filterwarnings("ignore", message=".*CUDA is not available.*")
                learn.fit_one_cycle(cfg.epochs, cfg.lr, wd=cfg.wd, moms=(0.9, 0.9, 0.9))
            for w in caught:  # the reporter (the CLI: in red) and then Python's own warning machinery
                if issubclass(w.category, EmphasisCollapseWarning):
                    self.reporter.note(str(w.message), "error")
                warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
        return self.finish(learn, time.perf_counter() - t0)

    # results
    def predict_train(self, learn) -> torch.Tensor:
        "Probabilities for every training example, without augmentation, in dataset order."
        dl = learn.dls.train.new(shuffle=False, drop_last=False, augment="none")
        with learn.no_bar(), learn.no_logging():
            probs, _ = learn.get_preds(dl=dl)
        return probs.float()

    def finish(self, learn, fit_seconds: float) -> dict:
        t0 = time.perf_counter()
        probs = self.predict_train(learn)
        pred = probs.argmax(1).numpy()
        given, true = self.noisy.given, self.noisy.true
        accs = [r["test_acc"] for r in self.rows if r.get("test_acc") is not None]
        ess = [r["gr_ess"] for r in self.rows if r.get("gr_ess") is not None]
        gr = self._gr(learn)
        result = {
            "test_accuracy_final": accs[-1] if accs else None,
            "test_accuracy_best": max(accs) if accs else None,
            "train_accuracy_given": float((pred == given).mean()),
            "train_accuracy_true": float((pred == true).mean()) if self.truth_known else None,
            "epochs": len(self.rows),
            "ess_final": ess[-1] if ess else None,
            "ess_min": min(ess) if ess else None,
            "emphasis_collapse_epochs": len(gr.collapsed_epochs) if gr is not None else 0,
        }
        if not self.light:
            self._write_examples(learn)
            self._export(learn)
            self._plots(learn)
        self.elapsed += time.perf_counter() - t0
        result["seconds"] = round(self.elapsed, 2)
        write_json(self.folder / "result.json", result)
        if self.ckpt.exists():
            self.ckpt.unlink()  # the run's own file: the exported learner replaces it
        self.probs = probs
        return result

    def _write_examples(self, learn) -> None:
        gr = self._gr(learn)
        if gr is None or gr.examples is None:
            return
        ex = gr.examples.copy()
        ok = ex["idx"].to_numpy() >= 0
        idx = ex["idx"].to_numpy()[ok]
        ex = ex[ok].assign(true=self.noisy.true[idx], flipped=self.noisy.flipped[idx].astype(int))
        with atomic_path(self.folder / "examples.csv") as tmp:
            ex.to_csv(tmp, index=False)
        self.examples = ex

    def _export(self, learn) -> None:
        keep = [cb for cb in learn.cbs if isinstance(cb, (EpochLog, FitMonitor))]
        learn.remove_cbs(keep)
        gr = self._gr(learn)
        saved = gr.examples if gr is not None else None
        if gr is not None:
            gr.examples = None  # written to examples.csv; not part of the model file
        try:
            with atomic_path(self.folder / "learner.pkl") as tmp, warnings.catch_warnings():
                warnings.simplefilter("ignore")
                learn.export(tmp.resolve())
        finally:
            if gr is not None:
                gr.examples = saved
            learn.add_cbs(keep)

    def _plots(self, learn) -> None:
        from .plots import plot_learning_curves, plot_weight_vs_p, plot_weights_flipped_clean, save_figure

        save_figure(plot_learning_curves(pd.DataFrame(self.rows)), self.folder / "curves.png")
        ex = getattr(self, "examples", None)
        if ex is not None and len(ex):
            save_figure(plot_weight_vs_p(ex, self.settings["lam"]), self.folder / "weights_vs_p.png")
            if self.truth_known and ex["flipped"].any():
                save_figure(plot_weights_flipped_clean(ex), self.folder / "weights_flipped_clean.png")


_PROGRESS_FILES = ("summary.json", "result.json", "checkpoint.pth", "tune.json", "retrain/result.json",
                   "retrain/checkpoint.pth", "tune/*/result.json", "tune/*/checkpoint.pth")


def _prepare_folder(out: Path, overwrite: bool, resume: bool) -> None:
    if out.exists() and not out.is_dir():
        raise RunExistsError(f"{out} exists and is not a folder")
    if resume:
        if not (out / "config.json").exists():
            raise FileNotFoundError(2, "no run to resume (no config.json)", str(out))
        if (out / "summary.json").exists():
            raise RunExistsError(f"{out} is a finished run; nothing to resume")
        return
    if out.exists() and any(out.iterdir()) and not overwrite:
        raise RunExistsError(f"{out} exists; pass --overwrite to write into it, or --resume to continue it")
    out.mkdir(parents=True, exist_ok=True)
    # a folder written over holds an older run's marks of finished work, which a later --resume would take for
    # this run's: only fastgr's own progress files go; every other file stays until a new one replaces it
    for stale in _PROGRESS_FILES:
        for path in out.glob(stale):
            path.unlink()


def train_run(
    cfg: TrainConfig,  # every setting of the run
    out: str | Path,  # the run folder: config.json, metrics.csv, labels.csv, summary.json, learner.pkl, plots
    overwrite: bool = False,  # write into an existing folder (files of the same names are replaced)
    resume: bool = False,  # continue an interrupted run in `out` with its own config.json
    reporter: Reporter | None = None,  # receives progress; None for silence
) -> dict[str, Any]:  # the summary, as written to summary.json
    "Train on noisy labels with GR (or CE), optionally correct the labels and retrain; write the run folder."
    out = Path(out)
    reporter = reporter or Reporter()
    saved = None
    if resume and (out / "config.json").exists():
        saved = read_json(out / "config.json")
        cfg = TrainConfig.from_dict(saved["config"])
    cfg.validate()
    _prepare_folder(out, overwrite, resume)

    device = resolve_device(cfg.device)
    data = load_data(cfg.data, cfg.img_size, cfg.valid_pct, cfg.seed, cfg.classes)
    if data.skipped:
        reporter.note(f"skipped {len(data.skipped)} unreadable image file(s); listed in skipped.txt", "warn")
        write_text(out / "skipped.txt", "".join(f"{p}\t{r}\n" for p, r in data.skipped))
    demo = cfg.data == "digits" and cfg.labels is None
    noise = cfg.noise if cfg.noise is not None else (DEMO_NOISE if demo else 0.0)
    noisy, truth_known = training_labels(data, noise, cfg.noise_type, cfg.seed, cfg.labels)
    rate = noisy.realised_rate if truth_known else None
    setting = _gr_setting(cfg, rate if (noise > 0 or cfg.labels) else (0.0 if truth_known else None),
                          data.n_classes)
    if cfg.tune and setting is not None and cfg.lam is None and cfg.beta is None:
        if not resume:  # the settings are resolved after tuning; --resume needs the config during it
            write_json(out / "config.json", {"config": asdict(cfg), "resolved": None, "command": sys.argv})
        tuned = _tuned(out, cfg, data, noisy, truth_known, reporter, resume)
        setting = Setting(tuned["lam"], tuned["beta"], f"tuned on {cfg.tune_holdout:.0%} of the noisy training "
                                                       f"labels (tune.csv)", tuned["warmup"])
        reporter.note(f"tuned: lam={setting.lam:g}, beta={setting.beta:g}, warm-up {setting.warmup:g}")
    if cfg.preset and setting is not None:
        reporter.note(f"preset lam={setting.lam:g}, beta={setting.beta:g}, warm-up {setting.warmup:g} from "
                      f"{setting.source}: {BUDGET_WARNING}", "warn")
    settings = {
        "device": str(device), "amp": bool(cfg.amp if cfg.amp is not None else device.type == "cuda"),
        "noise": noise, "augment": cfg.augment or data.augment, "img_size": data.img_size,
        "lam": setting.lam if setting else None, "beta": setting.beta if setting else None,
        "setting_source": setting.source if setting else None,
        "warmup": setting.warmup if setting else None, "warmup_mode": cfg.warmup_mode if setting else None,
    }
    if settings["amp"] and device.type != "cuda":
        reporter.note("--amp needs CUDA; training in float32 on the CPU", "warn")
        settings["amp"] = False
    config = {
        "config": asdict(cfg), "resolved": settings, "versions": _versions(), "command": sys.argv,
        "data": {"name": data.name, "n_train": len(data.train_y), "n_valid": len(data.valid_y),
                 "classes": data.classes, "channels": data.channels, "img_size": data.img_size,
                 "skipped_files": len(data.skipped), "truth_known": truth_known},
    }
    if saved is not None:  # a resumed run keeps its first command; one cut while tuning gets its settings now
        config["command"] = saved.get("command", config["command"])
    if saved is None or saved.get("resolved") is None:
        write_json(out / "config.json", config)
    save_labels(out / "labels.csv", noisy, data.classes, data.train_items)

    phase = _Phase(out, cfg, settings, data, noisy, truth_known, reporter, "train")
    result = _run_phase(phase, resume)
    summary: dict[str, Any] = {
        **{k: result[k] for k in ("test_accuracy_final", "test_accuracy_best", "train_accuracy_given",
                                  "train_accuracy_true")},
        "noise_rate_realised": noisy.realised_rate if truth_known else None,
        "truth_known": truth_known,
        "loss": cfg.loss, "lam": settings["lam"], "beta": settings["beta"], "warmup": settings["warmup"],
        "ess_final": result.get("ess_final"), "ess_min": result.get("ess_min"),
        "emphasis_collapse_epochs": result.get("emphasis_collapse_epochs", 0),
        "skipped_files": len(data.skipped),
    }
    if cfg.correct:
        summary.update(_correct_and_retrain(out, phase, cfg, settings, data, noisy, truth_known, reporter, resume))
    # the training work of every session (a resumed run adds up its parts)
    summary["seconds"] = round(_total_seconds(out, cfg.correct), 2)
    write_json(out / "summary.json", summary)
    return summary


def tune_run(
    cfg: TrainConfig,  # the run to tune: data, labels, model and epoch budget; its lam and beta are ignored
    out: str | Path | None = None,  # a folder for tune.csv and the tuning runs; a temporary one if None
    grid: list[tuple[float, ...]] | None = None,  # (lam, beta) or (lam, beta, warmup) to try; TUNE_GRID if None
    reporter: Reporter | None = None,  # receives progress
    overwrite: bool = False,  # write into an existing `out`
) -> dict[str, Any]:  # {"lam", "beta", "warmup", "holdout", "n_holdout", "table": rows as dicts}
    """Pick GR's (lam, beta) and warm-up on held-out *noisy* training labels: each setting of `grid` trains on
    the rest of the training set for the same epochs as the final run; the best held-out accuracy wins. The paper
    observes that accuracy on noisy held-out labels tracks clean test accuracy, so no clean labels are needed.
    A setting without a warm-up of its own gets `cfg.warmup`, or none; a `cfg.warmup` that is set applies to all."""
    cfg.validate()
    reporter = reporter or Reporter()
    data = load_data(cfg.data, cfg.img_size, cfg.valid_pct, cfg.seed, cfg.classes)
    demo = cfg.data == "digits" and cfg.labels is None
    noise = cfg.noise if cfg.noise is not None else (DEMO_NOISE if demo else 0.0)
    noisy, truth_known = training_labels(data, noise, cfg.noise_type, cfg.seed, cfg.labels)
    if out is None:
        import tempfile

        with tempfile.TemporaryDirectory() as tmp:
            return _tune(Path(tmp), cfg, data, noisy, truth_known, reporter, grid, resume=False)
    out = Path(out)
    if out.exists() and any(out.iterdir()) and not overwrite:
        raise RunExistsError(f"{out} exists; pass --overwrite to write into it")
    return _tune(out, cfg, data, noisy, truth_known, reporter, grid, resume=False)


def _tuned(out: Path, cfg: TrainConfig, data: ImageData, noisy: NoisyLabels, truth_known: bool,
           reporter: Reporter, resume: bool) -> dict:
    "The tuning of a `train --tune` run; a resumed run keeps what it already chose, or tuned so far."
    if resume and (out / "tune.json").exists():
        return read_json(out / "tune.json")
    return _tune(out, cfg, data, noisy, truth_known, reporter, None, resume)


def _tune(out: Path, cfg: TrainConfig, data: ImageData, noisy: NoisyLabels, truth_known: bool,
          reporter: Reporter, grid, resume: bool) -> dict:
    from .data import _stratified_split

    grid = [_grid_setting(g, cfg.warmup) for g in (grid or TUNE_GRID)]
    held = _stratified_split(noisy.given, cfg.tune_holdout, cfg.seed)
    keep = ~held
    # the held-out part keeps its *given* labels: tuning never sees clean labels
    sub = ImageData(f"{data.name} (tuning split)", data.classes, data.train_x[keep], data.train_y[keep],
                    data.train_x[held], torch.as_tensor(noisy.given[held]),
                    [it for it, k in zip(data.train_items, keep) if k],
                    [it for it, h in zip(data.train_items, held) if h], data.augment, data.labels_trusted)
    sub_noisy = NoisyLabels(noisy.given[keep], noisy.true[keep], noisy.noise_type, noisy.rate, noisy.seed)
    device = resolve_device(cfg.device)
    rows = []
    for i, (lam, beta, warmup) in enumerate(grid):
        c = TrainConfig.from_dict({**asdict(cfg), "lam": lam, "beta": beta, "loss": "gr", "preset": False,
                                   "correct": False, "tune": False})
        settings = {"device": str(device), "amp": bool(cfg.amp if cfg.amp is not None else device.type == "cuda"),
                    "augment": cfg.augment or data.augment, "lam": lam, "beta": beta, "warmup": warmup}
        phase = _Phase(out / "tune" / f"{i:02d}", c, settings, sub, sub_noisy, truth_known, reporter,
                       f"tune {i + 1}/{len(grid)}: lam {lam:g}, beta {beta:g}, warm-up {warmup:g}")
        phase.light = True
        r = _run_phase(phase, resume)  # a resumed `train --tune` skips finished settings and continues its last
        rows.append({"lam": lam, "beta": beta, "warmup": warmup,
                     "holdout_acc_noisy": r["test_accuracy_final"], "holdout_acc_noisy_best": r["test_accuracy_best"],
                     "ess_final": r["ess_final"], "emphasis_collapse_epochs": r["emphasis_collapse_epochs"],
                     "seconds": r["seconds"]})
    best = max(rows, key=lambda r: r["holdout_acc_noisy"])  # the first of equals
    result = {"lam": best["lam"], "beta": best["beta"], "warmup": best["warmup"], "holdout": cfg.tune_holdout,
              "n_holdout": int(held.sum()), "table": rows}
    with atomic_path(out / "tune.csv") as tmp:
        pd.DataFrame(rows).to_csv(tmp, index=False)
    write_json(out / "tune.json", result)
    return result


def _grid_setting(g: tuple[float, ...], warmup: float | None) -> tuple[float, float, float]:
    "(lam, beta[, warmup]) -> (lam, beta, warmup): a warm-up that is set overrides the grid's."
    if len(g) not in (2, 3):
        raise ValueError(f"a tuning grid setting is (lam, beta) or (lam, beta, warmup), got {g}")
    own = float(g[2]) if len(g) == 3 else DEFAULT_WARMUP
    return float(g[0]), float(g[1]), own if warmup is None else float(warmup)


def _run_phase(phase: _Phase, resume: bool) -> dict:
    done = phase.folder / "result.json"
    if resume and done.exists():
        phase.probs = None
        return read_json(done)
    return phase.run(resume)


def _total_seconds(out: Path, corrected: bool) -> float:
    total = read_json(out / "result.json")["seconds"]
    # a `train --tune` run trained once per setting before its own run
    total += sum(read_json(r)["seconds"] for r in sorted((out / "tune").glob("*/result.json")))
    if corrected and (out / "retrain" / "result.json").exists():
        total += read_json(out / "retrain" / "result.json")["seconds"]
    return total


def _correct_and_retrain(out: Path, phase: _Phase, cfg: TrainConfig, settings: dict, data: ImageData,
                         noisy: NoisyLabels, truth_known: bool, reporter: Reporter, resume: bool) -> dict:
    probs = phase.probs if getattr(phase, "probs", None) is not None else _predict_with_learner(
        out / "learner.pkl", data, settings["device"])
    corrected = relabel(probs, noisy.given, cfg.correct_threshold)
    report = correction_report(noisy.given, corrected, noisy.true if truth_known else None, probs.argmax(1).numpy())
    write_json(out / "correction.json", report)
    save_labels(out / "labels.csv", noisy, data.classes, data.train_items, {"corrected_label": corrected})
    reporter.note(f"relabelled {report['relabelled']} of {report['n']} training labels "
                  f"({report['relabelled_fraction']:.1%}); retraining from scratch")
    retrain_labels = NoisyLabels(corrected, noisy.true, "corrected", noisy.rate, noisy.seed)
    again = _Phase(out / "retrain", cfg, settings, data, retrain_labels, truth_known, reporter, "retrain")
    after = _run_phase(again, resume)
    return {
        "relabelled_fraction": report["relabelled_fraction"],
        "correction_precision": report["correction_precision"],
        "correction_recall": report["correction_recall"],
        "noise_rate_after_correction": report["noise_rate_after"],
        "test_accuracy_after_correction": after["test_accuracy_final"],
        "test_accuracy_best_after_correction": after["test_accuracy_best"],
    }


def _predict_with_learner(path: Path, data: ImageData, device: str, x: torch.Tensor | None = None) -> torch.Tensor:
    "Class probabilities of `x` (the training images by default) from an exported learner."
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        learn = load_learner(path, cpu=torch.device(device).type == "cpu")
    template = learn.dls.train
    if not isinstance(template, TensorDL):
        raise ValueError(f"{path} was not exported by fastgr train")
    x = data.train_x if x is None else x
    if tuple(x.shape[1:]) != (len(template.mean), *x.shape[2:]):
        raise ValueError(f"the data has {x.shape[1]} channel(s); the model expects {len(template.mean)}")
    dl = TensorDL(x, torch.zeros(len(x), dtype=torch.long), bs=max(template.bs, 256), mean=template.mean,
                  std=template.std, device=device)
    with learn.no_bar(), learn.no_logging():
        probs, _ = learn.get_preds(dl=dl)
    return probs.float()


def correct_run(
    run_dir: str | Path,  # a finished `fastgr train` run folder
    data: str | Path | None = None,  # data to relabel; the run's own training data if None
    threshold: float = 0.0,  # relabel only where the model's confidence is at least this
    out: str | Path | None = None,  # the corrected labelling; run_dir/labels_corrected.csv if None
    overwrite: bool = False,  # replace an existing `out`
) -> dict[str, Any]:  # the correction report, also written beside `out` as JSON
    """Relabel a training set with a trained run's model. The output is a labelling for `train --labels`: its
    given_label is the corrected label, its true_label the truth where known."""
    run_dir = Path(run_dir)
    if not (run_dir / "learner.pkl").exists() or not (run_dir / "config.json").exists():
        raise FileNotFoundError(2, "not a finished fastgr run (config.json and learner.pkl needed)", str(run_dir))
    saved = read_json(run_dir / "config.json")
    cfg = TrainConfig.from_dict(saved["config"])
    out = Path(out) if out is not None else run_dir / "labels_corrected.csv"
    report_path = out.with_suffix(".report.json")
    for p in (out, report_path):
        if p.exists() and not overwrite:
            raise RunExistsError(f"{p} exists; pass --overwrite to replace it")
    own = data is None or str(data) == str(cfg.data)
    loaded = load_data(cfg.data if own else data, saved["data"]["img_size"], cfg.valid_pct, cfg.seed, cfg.classes)
    if loaded.classes != saved["data"]["classes"]:
        raise ValueError(f"the data's classes ({len(loaded.classes)}) differ from the run's "
                         f"({len(saved['data']['classes'])})")
    if own and (run_dir / "labels.csv").exists():
        noisy, truth_known = training_labels(loaded, labels_file=run_dir / "labels.csv")
        truth_known = bool(saved["data"].get("truth_known", True))
    else:
        noisy, truth_known = training_labels(loaded)
    device = str(resolve_device(None))
    probs = _predict_with_learner(run_dir / "learner.pkl", loaded, device)
    corrected = relabel(probs, noisy.given, threshold)
    report = correction_report(noisy.given, corrected, noisy.true if truth_known else None,
                               probs.argmax(1).numpy())
    report.update(run=str(run_dir), data=str(loaded.name), threshold=threshold, labels=str(out))
    relabelled = NoisyLabels(corrected, noisy.true, "corrected", noisy.rate, noisy.seed,
                             {"corrected_by": str(run_dir), "truth_known": truth_known})
    # the labels the run trained on go beside the corrected ones
    save_labels(out, relabelled, loaded.classes, loaded.train_items, {"original_label": noisy.given})
    write_json(report_path, report)
    return report


def load_summary(run_dir: str | Path) -> dict[str, Any]:
    return json.loads((Path(run_dir) / "summary.json").read_text())
