"""`fastgr train`: one-line noisy-label experiments."""

from __future__ import annotations

import shlex
import time
from pathlib import Path

import typer

from fastgr.ranks import is_main, world_size

from .base import command, console, fail, usage_error
from .options import (
    DEFAULTS,
    PANEL_GR,
    PANEL_RUN,
    PANEL_TUNING,
    Amp,
    Arch,
    AugmentOpt,
    Balanced,
    Beta,
    Bs,
    Classes,
    CompileOpt,
    Data,
    Device,
    Epochs,
    Eps,
    FreezeEpochs,
    ImgSize,
    InMemory,
    InMemoryOpt,
    Labels,
    Lam,
    Loss,
    LossOpt,
    Lr,
    MixupOpt,
    Noise,
    NoiseType,
    NoiseTypeOpt,
    Overwrite,
    Pretrained,
    Seed,
    ValidPct,
    Warmup,
    WarmupMode,
    WarmupModeOpt,
    Wd,
    Weights,
    build_config,
    option,
    refuse_ignored,
)
from .render import RichReporter, summary_table

EPILOG = """Examples:

  fastgr train   (the demo: GR on digits with 40% symmetric noise)

  fastgr train --loss ce   (the cross-entropy baseline on the same labels; also ls, gce, sce, --mixup 0.2)

  fastgr train --correct --out runs/fix   (relabel with the model, retrain)

  fastgr train cifar10 --arch cifar_resnet56 --noise 0.4 --tune --epochs 100
"""


def interrupted_hint(out: Path) -> str:
    "What an interrupted run left and the command that goes on with it (a launch's own, for several processes)."
    import os

    from fastgr.runs import RunFolder

    folder = RunFolder(out)
    if not folder.interrupted:
        return "the run had not started: nothing was written"
    done = any((out / p).exists() for p in ("checkpoint.pth", "result.json", "retrain", "tune"))
    n = world_size()
    # torchrun's launch: the same number of processes, each with its own part of the command
    launch = f"torchrun --nproc_per_node {os.environ.get('LOCAL_WORLD_SIZE', n)} -m " if n > 1 else ""
    again = f"{launch}fastgr train --out {shlex.quote(str(out))} --resume"
    if not done:
        return f"no epoch had finished, so none is saved: {again} starts it again"
    return f"the last finished epoch is saved: {again}"


@command(epilog=EPILOG)
def train(
    ctx: typer.Context,
    data: Data = DEFAULTS.data,
    arch: Arch = DEFAULTS.arch,
    pretrained: Pretrained = DEFAULTS.pretrained,
    weights: Weights = None,
    freeze_epochs: FreezeEpochs = DEFAULTS.freeze_epochs,
    noise: Noise = DEFAULTS.noise,
    noise_type: NoiseTypeOpt = NoiseType(DEFAULTS.noise_type),
    labels: Labels = None,
    loss: LossOpt = Loss(DEFAULTS.loss),
    mixup: MixupOpt = DEFAULTS.mixup,
    lam: Lam = DEFAULTS.lam,
    beta: Beta = DEFAULTS.beta,
    preset: bool = option(PANEL_GR, DEFAULTS.preset, "--preset",
                          help="lam and beta from the paper's table (by noise rate and class count), with a warm-up."),
    tune: bool = option(PANEL_TUNING, DEFAULTS.tune, "--tune",
                        help="First pick lam and beta on held-out noisy training labels (`fastgr tune`), then train "
                             "with them."),
    auto: bool = option(PANEL_GR, DEFAULTS.auto, "--auto",
                        help="GR's automatic setting (experimental): lam 0.5, beta 8 from the second epoch if the "
                             "network is competent after its first (a fine-tune); lam 1, beta 16 blended in over the "
                             "first half on a long training; else cross-entropy until the network starts to fit the "
                             "labels it contradicted, then lam 1, beta 16."),
    warmup: Warmup = DEFAULTS.warmup,
    warmup_mode: WarmupModeOpt = WarmupMode(DEFAULTS.warmup_mode),
    eps: Eps = DEFAULTS.eps,
    epochs: Epochs = DEFAULTS.epochs,
    lr: Lr = DEFAULTS.lr,
    bs: Bs = DEFAULTS.bs,
    balanced: Balanced = DEFAULTS.balanced,
    wd: Wd = DEFAULTS.wd,
    img_size: ImgSize = DEFAULTS.img_size,
    augment: AugmentOpt = DEFAULTS.augment,
    in_memory: InMemoryOpt = InMemory(DEFAULTS.in_memory),
    valid_pct: ValidPct = DEFAULTS.valid_pct,
    classes: Classes = None,
    seed: Seed = DEFAULTS.seed,
    device: Device = DEFAULTS.device,
    amp: Amp = DEFAULTS.amp,
    compile: CompileOpt = DEFAULTS.compile,
    out: Path = option(PANEL_RUN, None, "--out", metavar="DIR",
                       help="Run folder. \\[default: runs/<data>-<loss>-<time>]"),
    correct: bool = option(PANEL_TUNING, DEFAULTS.correct, "--correct",
                           help="Relabel the training set with the model, then retrain from scratch."),
    correct_threshold: float = option(PANEL_TUNING, DEFAULTS.correct_threshold, "--correct-threshold", metavar="P",
                                      min=0, max=1,
                                      help="Relabel only where the model is at least this confident."),
    resume: bool = option(PANEL_RUN, False, "--resume", help="Continue the interrupted run in --out."),
    overwrite: Overwrite = False,
):
    """Train a classifier on noisy labels with GR (or plain cross-entropy) and write a run folder."""
    params = dict(locals())
    ignored = refuse_ignored(ctx, params)
    cfg = build_config(params)
    from fastgr.experiment import train_run

    if resume and out is None:
        usage_error("--resume needs --out, the run folder to continue")
    if world_size() > 1:  # a launch of several processes (torchrun, accelerate launch)
        if out is None:
            usage_error("a launch of several processes needs --out: every process must name the same run folder")
        console.quiet = not is_main()  # rank 0 reports; the others' errors still show
    if labels is not None and not labels.is_file():
        fail(f"no such labels file: {labels}")
    if out is None:
        name = Path(data).stem if data not in ("digits", "cifar10", "cifar100") else data
        out = Path("runs") / f"{name}-{cfg.loss}-{time.strftime('%Y%m%d-%H%M%S')}"
    reporter = RichReporter()
    console.print(f"run folder: [bold]{out}[/]")
    if ignored:
        reporter.note(ignored, "warn")
    try:
        summary = train_run(cfg, out, overwrite=overwrite, resume=resume, reporter=reporter)
    except KeyboardInterrupt:
        reporter.stop()
        console.print(f"[yellow]{interrupted_hint(out)}[/]", soft_wrap=True)
        raise
    finally:
        reporter.stop()
    console.print(summary_table(summary))
    console.print(f"wrote {out}/: config.json, metrics.csv, labels.csv, summary.json, learner.pkl, plots")
