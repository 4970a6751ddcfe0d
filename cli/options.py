"""The options `fastgr train` and `fastgr tune` share, declared once, with defaults and choices from the library.

Every default is `TrainConfig`'s and every choice list the library's constant, so `--help` and the Python API
cannot drift apart; `build_config` turns a command's parameters, named after `TrainConfig`'s fields, into one.
"""

from __future__ import annotations

import math
from dataclasses import fields
from enum import Enum
from pathlib import Path
from typing import Annotated, Any

import typer

from fastgr.config import AUGMENTS, COMPILE_MODES, DEMO_NOISE, IN_MEMORY, LOSSES, TrainConfig
from fastgr.noise import NOISE_TYPES
from fastgr.presets import FIXED_DEFAULT, LONG_BUDGET_EPOCHS, LONG_DEFAULT, PRESET_WARMUP, WARMUP_MODES

DEFAULTS = TrainConfig()

# `--help` groups the options of `train` and `tune` in these panels
PANEL_DATA, PANEL_MODEL, PANEL_GR = "Data and noise", "Model", "GR and baselines"
PANEL_TRAINING, PANEL_TUNING, PANEL_RUN = "Training", "Tuning and correction", "Run folder"


def option(panel: str, *args, **kwargs) -> Any:
    "A `typer.Option` shown in `panel` of --help."
    return typer.Option(*args, rich_help_panel=panel, **kwargs)


def choices(name: str, values) -> type[Enum]:
    "A Typer choice type of the library's own values."
    return Enum(name, {v: v for v in values}, type=str)


Loss = choices("Loss", LOSSES)
NoiseType = choices("NoiseType", NOISE_TYPES)
Augment = choices("Augment", AUGMENTS)
WarmupMode = choices("WarmupMode", WARMUP_MODES)
InMemory = choices("InMemory", IN_MEMORY)
CompileMode = choices("CompileMode", COMPILE_MODES)


def finite(value: float | None) -> float | None:
    "A number option must be a finite number: inf and nan are usage errors."
    if value is not None and not math.isfinite(value):
        raise typer.BadParameter(f"must be a finite number, got {value}")
    return value


def noise_rate(value: float | None) -> float | None:
    if value is not None and not 0 <= value < 1:
        raise typer.BadParameter(f"noise rate must be in [0, 1), got {value}")
    return value


def class_list(classes: str | None) -> list[str] | None:
    return [c.strip() for c in classes.split(",")] if classes else None


def given_options(ctx: typer.Context, names) -> list[str]:
    "The options among `names` that the user typed (not left at their defaults), as `--flag` spellings."
    out = []
    for name in names:
        source = ctx.get_parameter_source(name)
        if source is not None and source.name == "COMMANDLINE":
            out.append("--" + name.replace("_", "-"))
    return out


def refuse_ignored(ctx: typer.Context, params: dict[str, Any]) -> str | None:
    """Options that would be silently ignored: with `--labels`, a usage error naming them; with `--resume`, the
    warning to show (the run goes on with its own config.json, which is what a user resuming wants)."""
    if params.get("labels") is not None:
        drop = given_options(ctx, ("noise", "noise_type"))
        if drop:
            raise typer.BadParameter(f"--labels brings its own noisy labels; drop {', '.join(drop)}", ctx=ctx)
    if params.get("resume"):
        drop = given_options(ctx, [n for n in params if n not in ("out", "resume", "ctx")])
        if drop:
            return (f"--resume continues the run with the settings in its config.json; ignored: {', '.join(drop)} "
                    "(start a new run with --overwrite to change them)")
    return None


def build_config(params: dict[str, Any], **changes) -> TrainConfig:
    "A checked `TrainConfig` from a command's parameters (those named after its fields) and `changes`."
    names = {f.name for f in fields(TrainConfig)}
    kw = {k: (v.value if isinstance(v, Enum) else v) for k, v in {**params, **changes}.items() if k in names}
    for name in ("labels", "weights"):
        if kw.get(name) is not None:
            kw[name] = str(kw[name])
    if isinstance(kw.get("classes"), str):
        kw["classes"] = class_list(kw["classes"])
    return TrainConfig(**kw)


DATA_HELP = "digits (default, offline), cifar10, cifar100, an image folder, or a CSV of path,label[,is_valid]."

Data = Annotated[str, typer.Argument(help=DATA_HELP, show_default=True)]
Arch = Annotated[str, option(PANEL_MODEL, "--arch", metavar="NAME", help="Any timm model (see `fastgr models`).")]
Pretrained = Annotated[bool, option(
    PANEL_MODEL, "--pretrained/--no-pretrained",
    help="Fine-tune timm's pretrained weights: a new head on the pretrained body, trained alone for --freeze-epochs, "
         "then everything (fastai's fine_tune).")]
Weights = Annotated[Path, option(
    PANEL_MODEL, "--weights", metavar="FILE",
    help="Fine-tune these local weights of --arch instead (a state dict: .pth, .pt or .safetensors); for machines "
         "without internet.")]
FreezeEpochs = Annotated[int, option(
    PANEL_MODEL, "--freeze-epochs", metavar="N", min=0, show_default=False,
    help="Epochs training the new head alone before --epochs of the whole model. \\[default: 1 when fine-tuning]")]
Noise = Annotated[float, option(
    PANEL_DATA, "--noise", metavar="RATE", callback=noise_rate, show_default=False,
    help=f"Fraction of training labels to corrupt, in [0, 1). \\[default: {DEMO_NOISE:g} on digits, else 0]")]
NoiseTypeOpt = Annotated[NoiseType, option(PANEL_DATA, "--noise-type", metavar="TYPE",
                                           help="How labels are corrupted: symmetric, pairflip or asymmetric.")]
Labels = Annotated[Path, option(PANEL_DATA, "--labels", metavar="FILE",
                                help="Train on a labelling from `fastgr noise` instead.")]
LossOpt = Annotated[Loss, option(
    PANEL_GR, "--loss",
    help="gr (gradient rescaling), or a baseline: ce (cross-entropy), ls (label smoothing 0.1), gce (q 0.7), sce "
         "(alpha 0.1, beta 1).")]
MixupOpt = Annotated[float, option(PANEL_GR, "--mixup", metavar="ALPHA", min=0, callback=finite,
                                   help="MixUp's alpha with a baseline loss (fastai's MixUp); 0: none.")]
Lam = Annotated[float, option(PANEL_GR, "--lam", metavar="LAM", min=0, callback=finite, show_default=False,
                              help=f"Emphasis focus parameter. \\[default: {FIXED_DEFAULT.lam:g}; "
                                   f"{LONG_DEFAULT.lam:g} from {LONG_BUDGET_EPOCHS} epochs; or the preset's]")]
Beta = Annotated[float, option(PANEL_GR, "--beta", metavar="BETA", min=0, callback=finite, show_default=False,
                               help=f"Emphasis spread parameter. \\[default: {FIXED_DEFAULT.beta:g}; "
                                    f"{LONG_DEFAULT.beta:g} from {LONG_BUDGET_EPOCHS} epochs; or the preset's]")]
Epochs = Annotated[int, option(PANEL_TRAINING, "--epochs", metavar="N", min=1,
                               help="Training epochs (one-cycle schedule).")]
Lr = Annotated[float, option(PANEL_TRAINING, "--lr", metavar="LR", min=0, callback=finite,
                             help="Peak learning rate of SGD (momentum 0.9): a finite number > 0.")]
Bs = Annotated[int, option(PANEL_TRAINING, "--bs", metavar="N", min=1, help="Batch size.")]
Balanced = Annotated[bool, option(
    PANEL_TRAINING, "--balanced",
    help="Class-balanced training batches of the given labels: each class bs/C times a batch. Data in memory only.")]
Wd = Annotated[float, option(PANEL_TRAINING, "--wd", metavar="WD", min=0, callback=finite, help="L2 weight decay.")]
ImgSize = Annotated[int, option(PANEL_DATA, "--img-size", metavar="PX", min=4, show_default=False,
                                help="Image side. \\[default: digits 16, CIFAR 32, folders the first image's]")]
AugmentOpt = Annotated[Augment, option(PANEL_DATA, "--augment", show_default=False,
                                       help="Training augmentation. \\[default: none on digits, else crop+flip]")]
InMemoryOpt = Annotated[InMemory, option(
    PANEL_DATA, "--in-memory",
    help="A folder or CSV: decode every image into memory if they fit in 2 GiB (auto), always (yes), or stream the "
         "files from disk in worker processes (no).")]
ValidPct = Annotated[float, option(PANEL_DATA, "--valid-pct", metavar="FRAC", min=0, max=1, callback=finite,
                                   help="Held-out fraction of a folder or CSV without its own split.")]
Classes = Annotated[str, option(PANEL_DATA, "--classes", metavar="LIST",
                                help="Comma-separated class list of a folder or CSV.")]
Seed = Annotated[int, option(PANEL_TRAINING, "--seed", metavar="N",
                             help="Seed of the noise, the split, the initialisation and batches.")]
Device = Annotated[str, option(PANEL_TRAINING, "--device", metavar="DEVICE",
                               help="cpu, cuda, cuda:1... \\[default: cuda when available]")]
Amp = Annotated[bool, option(PANEL_TRAINING, "--amp/--no-amp", show_default=False,
                             help="bf16 mixed precision. \\[default: on with CUDA]")]
CompileOpt = Annotated[CompileMode, option(
    PANEL_TRAINING, "--compile", metavar="MODE", show_default=False,
    help="torch.compile the model in this mode; reduce-overhead captures it in CUDA graphs (on a GPU the eager step "
         "is bound by kernel launches: BENCHMARKS.md). Not under a launch of several processes. \\[default: eager]")]
Warmup = Annotated[float, option(
    PANEL_GR, "--warmup", metavar="FRAC", min=0, max=1, callback=finite, show_default=False,
    help=f"Fraction of training over which GR takes over from cross-entropy. \\[default: the setting's own: "
         f"{PRESET_WARMUP:g} for the paper's presets and the default from {LONG_BUDGET_EPOCHS} epochs, "
         f"{FIXED_DEFAULT.warmup:g} for lam {FIXED_DEFAULT.lam:g} / beta {FIXED_DEFAULT.beta:g} or a lam and beta you "
         "give]")]
WarmupModeOpt = Annotated[WarmupMode, option(
    PANEL_GR, "--warmup-mode", help="blend: a*GR + (1-a)*CE gradients; ramp: lam, beta from (0, 2) up.")]
Eps = Annotated[float, option(
    PANEL_GR, "--eps", metavar="EPS", min=0, callback=finite,
    help="The reference layer's saturation of GR's direction; 0: the bare formula.")]
Overwrite = Annotated[bool, option(
    PANEL_RUN, "--overwrite", help="Replace the run in an existing --out folder (files that are not fastgr's stay).")]
