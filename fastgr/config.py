"""A run's settings: what the user asked for (`TrainConfig`) and what it resolved to (`RunSettings`).

`TrainConfig` is checked when it is made; the CLI's options take their defaults and choices from it and from the
constants here, so each default is written once. `RunSettings` is resolved once per run, from the config, the
data and the labelling, and both go into the run folder's `config.json`. Light to import (no torch, no fastai):
the command line reads it to build its options.
"""

from __future__ import annotations

import math
import platform
from dataclasses import asdict, dataclass, fields, replace
from typing import Any

from .noise import NOISE_TYPES
from .presets import AUTO, DEFAULT_WARMUP, REFERENCE_EPS, WARMUP_MODES, Setting, default_setting, paper_setting

__all__ = ["TrainConfig", "RunSettings", "LOSSES", "AUGMENTS", "IN_MEMORY", "COMPILE_MODES", "DEMO_NOISE",
           "resolve_device", "resolve_settings", "versions"]

LOSSES = ("gr", "ce", "ls", "gce", "sce")  # GR, then the baselines of `fastgr.losses`
AUGMENTS = ("crop+flip", "crop", "none")  # pad-and-crop plus flip, the crop alone, nothing (`fastgr.loader`)
IN_MEMORY = ("auto", "yes", "no")  # hold a folder's or CSV's decoded images in memory: if they fit, always, never
# torch.compile's modes; reduce-overhead captures the step in CUDA graphs, where fastgr's eager step is bound by
# kernel launches (BENCHMARKS.md, "GPU: one H100")
COMPILE_MODES = ("default", "reduce-overhead", "max-autotune")
DEMO_NOISE = 0.4  # digits is the offline demo: by default it trains on 40% symmetric noise


@dataclass(frozen=True)
class TrainConfig:
    "Every setting of a training run, checked when made; `config.json` stores it beside what it resolved to."

    data: str = "digits"  # digits, cifar10, cifar100, an image folder or a CSV of path,label[,is_valid]
    arch: str = "cifar_resnet20"  # any timm model name; cifar_resnet20/32/44/56/110 included
    pretrained: bool = False  # fine-tune timm's pretrained weights (fastai's body + new head, `fine_tune`'s schedule)
    weights: str | None = None  # fine-tune these local weights instead (a state dict, .pth or .safetensors)
    freeze_epochs: int | None = None  # epochs training the new head alone first; None: 1 when fine-tuning, else 0
    noise: float | None = None  # fraction of training labels to corrupt; None: 0.4 on digits, else 0
    noise_type: str = "symmetric"  # symmetric, pairflip or asymmetric
    labels: str | None = None  # a noisy-label CSV from `fastgr noise` to train on instead of drawing noise
    loss: str = "gr"  # gr (gradient rescaling), or a baseline: ce, ls (label smoothing), gce, sce
    mixup: float = 0.0  # MixUp's alpha with a baseline loss (fastai's MixUp); 0: none
    lam: float | None = None  # emphasis focus parameter; None: the preset's or the default (`default_setting`)
    beta: float | None = None  # emphasis spread parameter; None: the preset's or the default (`default_setting`)
    preset: bool = False  # lam and beta from the paper's table by noise rate and class count
    auto: bool = False  # GR's automatic setting: which setting, from when, by the run and its schedule (`handover`)
    epochs: int = 30  # training epochs (one-cycle schedule); when fine-tuning, those after unfreezing
    lr: float = 0.1  # peak learning rate of SGD (momentum 0.9)
    bs: int = 128  # batch size
    balanced: bool = False  # class-balanced training batches of the labels trained on (`balanced_order`); in memory
    wd: float = 5e-4  # L2 weight decay
    img_size: int | None = None  # image side; digits 16, CIFAR 32, folders: the first image's size
    augment: str | None = None  # crop+flip, crop or none; digits none, others crop+flip
    in_memory: str = "auto"  # a folder or CSV: decoded into memory if it fits (auto), always (yes), or streamed (no)
    valid_pct: float = 0.2  # held-out fraction for a folder or CSV without its own split
    classes: tuple[str, ...] | None = None  # class names in label order (folder or CSV)
    seed: int = 0  # seed of the noise draw, the split, the initialisation and the batches
    device: str | None = None  # cpu, cuda, cuda:1...; None: cuda when available
    amp: bool | None = None  # bf16 mixed precision; None: on for CUDA
    compile: str | None = None  # torch.compile the model in this mode (`COMPILE_MODES`); None: eager
    correct: bool = False  # then relabel the training set with the model and retrain from scratch
    correct_threshold: float = 0.0  # relabel only where the model's confidence is at least this
    eps: float = REFERENCE_EPS  # the reference layer's saturation of GR's direction; 0: the bare formula
    warmup: float | None = None  # fraction of training over which GR takes over from CE; None: the setting's
    warmup_mode: str = "blend"  # blend (a*G_GR + (1-a)*G_CE) or ramp (lam, beta from 0, 2)
    tune: bool = False  # first pick lam and beta with `tune_run` on a held-out part of the noisy training set
    tune_holdout: float = 0.2  # that held-out fraction

    def __post_init__(self):
        if self.classes is not None and not isinstance(self.classes, tuple):
            object.__setattr__(self, "classes", tuple(self.classes))
        self.validate()

    def validate(self) -> None:
        "Raise a `ValueError` naming the first bad setting."
        for name in ("noise", "lam", "beta", "lr", "wd", "valid_pct", "correct_threshold", "eps", "warmup",
                     "tune_holdout", "mixup"):
            v = getattr(self, name)
            if v is not None and (isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v)):
                raise ValueError(f"{name} must be a finite number, got {v!r}")
        if self.noise is not None and not 0 <= self.noise < 1:
            raise ValueError(f"noise rate must be in [0, 1), got {self.noise}")
        for name, value, choices in (("noise type", self.noise_type, NOISE_TYPES), ("loss", self.loss, LOSSES),
                                     ("in_memory", self.in_memory, IN_MEMORY),
                                     ("warmup mode", self.warmup_mode, WARMUP_MODES),
                                     ("compile mode", self.compile or COMPILE_MODES[0], COMPILE_MODES)):
            if value not in choices:
                raise ValueError(f"unknown {name} {value!r}; choose one of {', '.join(choices)}")
        if self.augment is not None and self.augment not in AUGMENTS:
            raise ValueError(f"unknown augment {self.augment!r}; choose one of {', '.join(AUGMENTS)}")
        for name in ("epochs", "bs"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1")
        if self.lr <= 0 or self.wd < 0:
            raise ValueError("lr must be > 0 and wd >= 0")
        if self.freeze_epochs is not None and (isinstance(self.freeze_epochs, bool) or self.freeze_epochs < 0):
            raise ValueError(f"freeze_epochs must be >= 0, got {self.freeze_epochs}")
        if self.freeze_epochs and not self.finetune:
            raise ValueError("--freeze-epochs trains a new head on a pretrained body first: it needs --pretrained or "
                             "--weights")
        if self.img_size is not None and self.img_size < 4:
            raise ValueError("img_size must be >= 4")
        if not 0 <= self.correct_threshold <= 1:
            raise ValueError("correct_threshold must be in [0, 1]")
        if self.warmup is not None and not 0 <= self.warmup <= 1:
            raise ValueError(f"warmup must be a fraction of training in [0, 1], got {self.warmup}")
        if not 0 < self.tune_holdout < 1:
            raise ValueError(f"tune_holdout must be in (0, 1), got {self.tune_holdout}")
        if self.eps < 0:
            raise ValueError(f"eps must be >= 0, got {self.eps}")
        if self.mixup < 0:
            raise ValueError(f"mixup is MixUp's alpha, >= 0; got {self.mixup}")
        if self.mixup and self.loss == "gr":
            raise ValueError("GR with MixUp is refused: MixUp mixes labels into soft targets, and GR is defined for "
                             "integer labels; use --mixup with a baseline loss (--loss ce, ls, gce, sce)")
        if self.auto:
            given = [f"--{k}" for k in ("lam", "beta", "warmup") if getattr(self, k) is not None] + \
                [f"--{k}" for k in ("preset", "tune") if getattr(self, k)]
            if self.loss != "gr" or given:
                with_ = ", ".join(given) or f"--loss {self.loss}"
                raise ValueError(f"--auto decides GR's setting itself: not with {with_}")
        for name in ("lam", "beta"):
            v = getattr(self, name)
            if v is not None and v < 0:
                raise ValueError(f"{name} must be >= 0, got {v}")

    @classmethod
    def from_dict(cls, d: dict) -> TrainConfig:
        "From `config.json`'s `config`; keys of other versions are ignored."
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in names})

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["classes"] = list(self.classes) if self.classes is not None else None
        return d

    def replace(self, **changes) -> TrainConfig:
        "A copy with some settings changed, checked again."
        return replace(self, **changes)

    @property
    def finetune(self) -> bool:
        "Whether the model starts from pretrained weights (timm's or a file): fastai's body + head, `fine_tune`."
        return self.pretrained or self.weights is not None

    @property
    def head_epochs(self) -> int:
        "Epochs training the new head alone before the whole model: `fine_tune`'s `freeze_epochs`."
        if self.freeze_epochs is not None:
            return self.freeze_epochs
        return 1 if self.finetune else 0

    @property
    def total_epochs(self) -> int:
        "Every training epoch: the head's alone, then the whole model's."
        return self.head_epochs + self.epochs

    @property
    def demo(self) -> bool:
        "The offline demo: digits with its own labels, corrupted by default."
        return self.data == "digits" and self.labels is None

    @property
    def noise_rate(self) -> float:
        "The fraction of labels to corrupt: the one given, else 0.4 for the demo and 0 for everything else."
        return self.noise if self.noise is not None else (DEMO_NOISE if self.demo else 0.0)


@dataclass(frozen=True)
class RunSettings:
    "What a run's config resolved to, once, for its data and labels: config.json's `resolved`."

    device: str  # the training device
    amp: bool  # bf16 mixed precision
    noise: float  # the noise rate drawn (0 with a labels file)
    augment: str  # the training augmentation
    img_size: int  # the decoded images' side
    lam: float | None  # GR's emphasis focus parameter; None for cross-entropy
    beta: float | None  # GR's emphasis spread parameter
    setting_source: str | None  # where lam and beta come from
    warmup: float | None  # fraction of training over which GR takes over from CE
    warmup_mode: str | None  # blend or ramp
    auto: bool = False  # the automatic setting (`fastgr.handover`): lam and beta are its strong setting's

    @property
    def gr(self) -> bool:
        return self.lam is not None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def resolve_device(name: str | None):
    "The training device (a `torch.device`): `name`, or CUDA when available, else the CPU; unavailable: an error."
    import torch

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


def gr_setting(cfg: TrainConfig, noise_rate: float | None, n_classes: int) -> Setting | None:
    """GR's (lam, beta, warm-up) for a config: given, the paper's preset, or the default for its budget
    (`default_setting`, also where a preset has no noise rate to go by); None for CE."""
    if cfg.loss != "gr":
        return None
    if cfg.auto:
        return AUTO
    if cfg.preset and noise_rate is not None:
        base = paper_setting(noise_rate, n_classes)
    else:
        base = default_setting(cfg.total_epochs)
    if cfg.lam is None and cfg.beta is None:
        setting = base
    elif cfg.lam is not None and cfg.beta is not None:
        setting = Setting(cfg.lam, cfg.beta, "given", DEFAULT_WARMUP)
    else:
        lam = base.lam if cfg.lam is None else cfg.lam
        beta = base.beta if cfg.beta is None else cfg.beta
        setting = Setting(lam, beta, f"given + {base.source}", base.warmup)
    return setting if cfg.warmup is None else setting._replace(warmup=cfg.warmup)


def resolve_settings(
    cfg: TrainConfig,  # the run's config
    device,  # its resolved `torch.device`
    data,  # its decoded data (`ImageData`)
    setting: Setting | None,  # GR's setting (`gr_setting`, or tuned); None for cross-entropy
) -> RunSettings:
    "The settings a run trains with."
    return RunSettings(
        device=str(device), amp=bool(cfg.amp if cfg.amp is not None else device.type == "cuda") and
        device.type == "cuda", noise=0.0 if cfg.labels else cfg.noise_rate, augment=cfg.augment or data.augment,
        img_size=data.img_size, lam=setting.lam if setting else None, beta=setting.beta if setting else None,
        setting_source=setting.source if setting else None, warmup=setting.warmup if setting else None,
        warmup_mode=cfg.warmup_mode if setting else None, auto=setting is not None and setting.source == AUTO.source)


def versions() -> dict[str, str]:
    "The versions of what a run's numbers depend on, for config.json and the benchmarks."
    import fastai
    import torch

    from . import __version__

    try:
        import timm
    except ModuleNotFoundError:  # the library without the `cli` extra: a model of your own
        timm = None
    return {"fastgr": __version__, "fastai": fastai.__version__, "torch": torch.__version__,
            "timm": timm.__version__ if timm else "not installed", "python": platform.python_version(),
            "cpu": cpu_kind()}


def cpu_kind() -> str:
    """The CPU's kernel family (torch's), model and a digest of its feature flags: two machines of one kind train
    a seeded CPU run to the same digits; of two kinds, not always (BENCHMARKS.md, "Results across methods")."""
    import hashlib

    import torch

    model, flags = platform.processor() or platform.machine(), ""
    try:
        with open("/proc/cpuinfo") as f:
            text = f.read()
        for line in text.splitlines():
            key, _, value = line.partition(":")
            if key.strip() == "model name":
                model = value.strip()
            elif key.strip() in ("flags", "Features") and not flags:
                flags = " ".join(sorted(value.split()))
    except OSError:  # not Linux: the model and capability say what they can
        pass
    digest = hashlib.sha256(flags.encode()).hexdigest()[:8] if flags else "-"
    return f"{torch.backends.cpu.get_cpu_capability()}, {model}, flags {digest}"
