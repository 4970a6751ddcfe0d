"""Options shared by `fastgr train` and `fastgr tune`, declared once."""

from __future__ import annotations

from enum import Enum
from pathlib import Path
from typing import Annotated

import typer


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


class WarmupMode(str, Enum):
    blend = "blend"
    ramp = "ramp"


def noise_rate(value: float | None) -> float | None:
    if value is not None and not 0 <= value < 1:
        raise typer.BadParameter(f"noise rate must be in [0, 1), got {value}")
    return value


DATA_HELP = "digits (default, offline), cifar10, cifar100, an image folder, or a CSV of path,label[,is_valid]."

Data = Annotated[str, typer.Argument(help=DATA_HELP, show_default=True)]
Arch = Annotated[str, typer.Option("--arch", help="Any timm model (see `fastgr models`).")]
Pretrained = Annotated[bool, typer.Option("--pretrained/--no-pretrained", help="Start from timm's weights.")]
Noise = Annotated[float, typer.Option(
    "--noise", callback=noise_rate, show_default=False,
    help="Fraction of training labels to corrupt, in [0, 1). \\[default: 0.4 on digits, else 0]")]
NoiseTypeOpt = Annotated[NoiseType, typer.Option("--noise-type", help="How labels are corrupted.")]
Labels = Annotated[Path, typer.Option("--labels", help="Train on a labelling from `fastgr noise` instead.")]
Epochs = Annotated[int, typer.Option("--epochs", min=1, help="Training epochs (one-cycle schedule).")]
Lr = Annotated[float, typer.Option("--lr", min=0, help="Peak learning rate (SGD, momentum 0.9).")]
Bs = Annotated[int, typer.Option("--bs", min=1, help="Batch size.")]
Wd = Annotated[float, typer.Option("--wd", min=0, help="L2 weight decay.")]
ImgSize = Annotated[int, typer.Option(
    "--img-size", min=4, show_default=False,
    help="Image side. \\[default: digits 16, CIFAR 32, folders the first image's]")]
AugmentOpt = Annotated[Augment, typer.Option(
    "--augment", show_default=False, help="Training augmentation. \\[default: none on digits, else crop+flip]")]
ValidPct = Annotated[float, typer.Option(
    "--valid-pct", min=0, max=1, help="Held-out fraction of a folder or CSV without its own split.")]
Classes = Annotated[str, typer.Option("--classes", help="Comma-separated class list of a folder or CSV.")]
Seed = Annotated[int, typer.Option("--seed", help="Seed of the noise, the split, the initialisation and batches.")]
Device = Annotated[str, typer.Option("--device", help="cpu, cuda, cuda:1... \\[default: cuda when available]")]
Amp = Annotated[bool, typer.Option("--amp/--no-amp", show_default=False,
                                   help="bf16 mixed precision. \\[default: on with CUDA]")]
Warmup = Annotated[float, typer.Option(
    "--warmup", min=0, max=1, show_default=False,
    help="Fraction of training over which GR takes over from cross-entropy. \\[default: the setting's own: 0.5 "
         "for the paper's presets, 0 for lam 0.5 / beta 8 or a lam and beta you give]")]
WarmupModeOpt = Annotated[WarmupMode, typer.Option(
    "--warmup-mode", help="blend: a*GR + (1-a)*CE gradients; ramp: lam, beta from (0, 2) up.")]
Eps = Annotated[float, typer.Option(
    "--eps", min=0, help="The reference layer's saturation of GR's direction; 0: the bare formula.")]
Overwrite = Annotated[bool, typer.Option(
    "--overwrite", help="Write into an existing --out folder, replacing the run in it (other files stay).")]


def class_list(classes: str | None) -> list[str] | None:
    return [c.strip() for c in classes.split(",")] if classes else None
