"""`fastgr train`: one-line noisy-label experiments."""

from __future__ import annotations

import time
from enum import Enum
from pathlib import Path

import typer

from .base import command, console, fail, usage_error
from .render import RichReporter, summary_table


class Loss(str, Enum):
    gr = "gr"
    ce = "ce"


class NoiseType(str, Enum):
    symmetric = "symmetric"
    pairflip = "pairflip"
    asymmetric = "asymmetric"


class Augment(str, Enum):
    crop_flip = "crop+flip"
    crop = "crop"
    none = "none"


def noise_rate(value: float | None) -> float | None:
    if value is not None and not 0 <= value < 1:
        raise typer.BadParameter(f"noise rate must be in [0, 1), got {value}")
    return value


DATA_HELP = "digits (default, offline), cifar10, cifar100, an image folder, or a CSV of path,label[,is_valid]."

EPILOG = """Examples:

  fastgr train   (the demo: GR on digits with 40% symmetric noise)

  fastgr train --loss ce   (the cross-entropy baseline on the same labels)

  fastgr train --correct --out runs/fix   (relabel with the model, retrain)

  fastgr train cifar10 --arch cifar_resnet56 --noise 0.4 --epochs 100
"""


@command(epilog=EPILOG)
def train(
    data: str = typer.Argument("digits", help=DATA_HELP, show_default=True),
    arch: str = typer.Option("cifar_resnet20", "--arch", help="Any timm model (see `fastgr models`)."),
    pretrained: bool = typer.Option(False, "--pretrained/--no-pretrained", help="Start from timm's weights."),
    noise: float = typer.Option(None, "--noise", callback=noise_rate, show_default=False,
                                help="Fraction of training labels to corrupt, in [0, 1). [default: 0.4 on "
                                     "digits, else 0]"),
    noise_type: NoiseType = typer.Option(NoiseType.symmetric, "--noise-type", help="How labels are corrupted."),
    labels: Path = typer.Option(None, "--labels", help="Train on a labelling from `fastgr noise` instead."),
    loss: Loss = typer.Option(Loss.gr, "--loss", help="gr (gradient rescaling) or ce (the baseline)."),
    lam: float = typer.Option(None, "--lam", min=0, show_default=False,
                              help="Emphasis focus parameter. [default: 0.5, or the preset's]"),
    beta: float = typer.Option(None, "--beta", min=0, show_default=False,
                               help="Emphasis spread parameter. [default: 8, or the preset's]"),
    preset: bool = typer.Option(False, "--preset", help="lam and beta from the paper's table (by noise rate and "
                                                        "class count); tuned for long schedules."),
    epochs: int = typer.Option(30, "--epochs", min=1, help="Training epochs (one-cycle schedule)."),
    lr: float = typer.Option(0.1, "--lr", min=0, help="Peak learning rate (SGD, momentum 0.9)."),
    bs: int = typer.Option(128, "--bs", min=1, help="Batch size."),
    wd: float = typer.Option(5e-4, "--wd", min=0, help="L2 weight decay."),
    img_size: int = typer.Option(None, "--img-size", min=4, show_default=False,
                                 help="Image side. [default: digits 16, CIFAR 32, folders the first image's]"),
    augment: Augment = typer.Option(None, "--augment", show_default=False,
                                    help="Training augmentation. [default: none on digits, else crop+flip]"),
    valid_pct: float = typer.Option(0.2, "--valid-pct", min=0, max=1,
                                    help="Held-out fraction of a folder or CSV without its own split."),
    classes: str = typer.Option(None, "--classes", help="Comma-separated class list of a folder or CSV."),
    seed: int = typer.Option(0, "--seed", help="Seed of the noise, the split, the initialisation and batches."),
    device: str = typer.Option(None, "--device", help="cpu, cuda, cuda:1... [default: cuda when available]"),
    amp: bool = typer.Option(None, "--amp/--no-amp", show_default=False,
                             help="bf16 mixed precision. [default: on with CUDA]"),
    out: Path = typer.Option(None, "--out", help="Run folder. [default: runs/<data>-<loss>-<time>]"),
    correct: bool = typer.Option(False, "--correct", help="Relabel the training set with the model, then "
                                                          "retrain from scratch (paper, Table 9)."),
    correct_threshold: float = typer.Option(0.0, "--correct-threshold", min=0, max=1,
                                            help="Relabel only where the model is at least this confident."),
    resume: bool = typer.Option(False, "--resume", help="Continue the interrupted run in --out."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Write into an existing --out folder."),
):
    """Train a classifier on noisy labels with GR (or plain cross-entropy) and write a run folder."""
    from fastgr.experiment import TrainConfig, train_run

    if resume and out is None:
        usage_error("--resume needs --out, the run folder to continue")
    if labels is not None and not labels.is_file():
        fail(f"no such labels file: {labels}")
    cfg = TrainConfig(
        data=data, arch=arch, pretrained=pretrained, noise=noise, noise_type=noise_type.value,
        labels=str(labels) if labels else None, loss=loss.value, lam=lam, beta=beta, preset=preset,
        epochs=epochs, lr=lr, bs=bs, wd=wd, img_size=img_size, augment=augment.value if augment else None,
        valid_pct=valid_pct, classes=[c.strip() for c in classes.split(",")] if classes else None, seed=seed,
        device=device, amp=amp, correct=correct, correct_threshold=correct_threshold,
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
