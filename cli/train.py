"""`fastgr train`: one-line noisy-label experiments."""

from __future__ import annotations

import time
from pathlib import Path

import typer

from fastgr.presets import REFERENCE_EPS

from .base import command, console, fail, usage_error
from .options import (
    Amp,
    Arch,
    AugmentOpt,
    Bs,
    Classes,
    Data,
    Device,
    Epochs,
    Eps,
    ImgSize,
    Labels,
    Loss,
    Lr,
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
    class_list,
)
from .render import RichReporter, summary_table

EPILOG = """Examples:

  fastgr train   (the demo: GR on digits with 40% symmetric noise)

  fastgr train --loss ce   (the cross-entropy baseline on the same labels)

  fastgr train --correct --out runs/fix   (relabel with the model, retrain)

  fastgr train cifar10 --arch cifar_resnet56 --noise 0.4 --tune --epochs 100
"""


def build_config(**kw):
    "A `TrainConfig` from the shared options."
    from fastgr.experiment import TrainConfig

    kw["labels"] = str(kw["labels"]) if kw.get("labels") else None
    kw["classes"] = class_list(kw.get("classes"))
    for k, v in list(kw.items()):
        if hasattr(v, "value"):  # the enums of the options
            kw[k] = v.value
    return TrainConfig(**kw)


@command(epilog=EPILOG)
def train(
    data: Data = "digits",
    arch: Arch = "cifar_resnet20",
    pretrained: Pretrained = False,
    noise: Noise = None,
    noise_type: NoiseTypeOpt = NoiseType.symmetric,
    labels: Labels = None,
    loss: Loss = typer.Option(Loss.gr, "--loss", help="gr (gradient rescaling) or ce (the baseline)."),
    lam: float = typer.Option(None, "--lam", min=0, show_default=False,
                              help="Emphasis focus parameter. \\[default: 0.5, or the preset's]"),
    beta: float = typer.Option(None, "--beta", min=0, show_default=False,
                               help="Emphasis spread parameter. \\[default: 8, or the preset's]"),
    preset: bool = typer.Option(False, "--preset", help="lam and beta from the paper's table (by noise rate and "
                                                        "class count); tuned for long schedules."),
    tune: bool = typer.Option(False, "--tune", help="First pick lam and beta on held-out noisy training labels "
                                                    "(`fastgr tune`), then train with them."),
    warmup: Warmup = None,
    warmup_mode: WarmupModeOpt = WarmupMode.blend,
    eps: Eps = REFERENCE_EPS,
    epochs: Epochs = 30,
    lr: Lr = 0.1,
    bs: Bs = 128,
    wd: Wd = 5e-4,
    img_size: ImgSize = None,
    augment: AugmentOpt = None,
    valid_pct: ValidPct = 0.2,
    classes: Classes = None,
    seed: Seed = 0,
    device: Device = None,
    amp: Amp = None,
    out: Path = typer.Option(None, "--out", help="Run folder. \\[default: runs/<data>-<loss>-<time>]"),
    correct: bool = typer.Option(False, "--correct", help="Relabel the training set with the model, then "
                                                          "retrain from scratch (paper, Table 9)."),
    correct_threshold: float = typer.Option(0.0, "--correct-threshold", min=0, max=1,
                                            help="Relabel only where the model is at least this confident."),
    resume: bool = typer.Option(False, "--resume", help="Continue the interrupted run in --out."),
    overwrite: Overwrite = False,
):
    """Train a classifier on noisy labels with GR (or plain cross-entropy) and write a run folder."""
    from fastgr.experiment import train_run

    if resume and out is None:
        usage_error("--resume needs --out, the run folder to continue")
    if labels is not None and not labels.is_file():
        fail(f"no such labels file: {labels}")
    cfg = build_config(
        data=data, arch=arch, pretrained=pretrained, noise=noise, noise_type=noise_type, labels=labels, loss=loss,
        lam=lam, beta=beta, preset=preset, tune=tune, warmup=warmup, warmup_mode=warmup_mode, eps=eps,
        epochs=epochs, lr=lr, bs=bs, wd=wd, img_size=img_size, augment=augment, valid_pct=valid_pct,
        classes=classes, seed=seed, device=device, amp=amp, correct=correct, correct_threshold=correct_threshold,
    )
    if out is None:
        name = Path(data).stem if data not in ("digits", "cifar10", "cifar100") else data
        out = Path("runs") / f"{name}-{cfg.loss}-{time.strftime('%Y%m%d-%H%M%S')}"
    reporter = RichReporter()
    console.print(f"run folder: [bold]{out}[/]")
    try:
        summary = train_run(cfg, out, overwrite=overwrite, resume=resume, reporter=reporter)
    except KeyboardInterrupt:
        reporter.stop()
        console.print(f"[yellow]interrupted; the last finished epoch is saved: "
                      f"fastgr train --out {out} --resume[/]", soft_wrap=True)
        raise
    finally:
        reporter.stop()
    console.print(summary_table(summary))
    console.print(f"wrote {out}/: config.json, metrics.csv, labels.csv, summary.json, learner.pkl, plots")
