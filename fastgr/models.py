"""Backbones: every timm model by name, plus He et al.'s CIFAR ResNets registered in timm's registry.

After `import fastgr.models`, `timm.create_model("cifar_resnet56", num_classes=10)` works like any timm model.
`create_model` is the one factory the CLI and the experiments use.
"""

from __future__ import annotations

import difflib
import fnmatch
from pathlib import Path

import timm
import torch
from timm.models import build_model_with_cfg, generate_default_cfgs, register_model
from torch import nn
from torch.nn import functional as F

__all__ = ["CifarResNet", "CIFAR_DEPTHS", "create_model", "check_model", "create_finetune_model", "model_stats",
           "check_arch", "list_backbones", "has_pretrained"]

CIFAR_DEPTHS = (20, 32, 44, 56, 110)


class _BasicBlock(nn.Module):
    def __init__(self, c_in: int, c_out: int, stride: int):
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(c_out)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(c_out)
        self.stride, self.pad = stride, c_out - c_in

    def shortcut(self, x: torch.Tensor) -> torch.Tensor:
        # He et al.'s option A for CIFAR: subsample, then zero-pad the new channels (no parameters)
        if self.stride > 1:
            x = x[:, :, :: self.stride, :: self.stride]
        return F.pad(x, (0, 0, 0, 0, 0, self.pad)) if self.pad else x

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)), inplace=True)
        return F.relu(self.bn2(self.conv2(out)) + self.shortcut(x), inplace=True)


class CifarResNet(nn.Module):
    "He et al. (2016), Sec. 4.2: 6n+2 layers, 16/32/64 channels, global pooling, for 32x32 inputs (or any size)."

    def __init__(
        self,
        depth: int = 56,  # 6n + 2: 20, 32, 44, 56 or 110
        num_classes: int = 10,  # size of the classifier's output
        in_chans: int = 3,  # input channels
        drop_rate: float = 0.0,  # dropout before the classifier
        global_pool: str = "avg",  # only average pooling, as in the paper
    ):
        super().__init__()
        if (depth - 2) % 6 or depth < 8:
            raise ValueError(f"CIFAR ResNet depth must be 6n+2 (20, 32, 44, 56, 110), got {depth}")
        if global_pool != "avg":
            raise ValueError("CifarResNet supports global_pool='avg' only")
        n = (depth - 2) // 6
        self.num_classes, self.num_features, self.drop_rate = num_classes, 64, drop_rate
        self.stem = nn.Sequential(nn.Conv2d(in_chans, 16, 3, 1, 1, bias=False), nn.BatchNorm2d(16), nn.ReLU(True))
        blocks, c_in = [], 16
        for c_out, stride in ((16, 1), (32, 2), (64, 2)):
            for i in range(n):
                blocks.append(_BasicBlock(c_in, c_out, stride if i == 0 else 1))
                c_in = c_out
        self.blocks = nn.Sequential(*blocks)
        self.fc = nn.Linear(64, num_classes) if num_classes else nn.Identity()
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.Linear):
                nn.init.kaiming_normal_(m.weight)
                nn.init.zeros_(m.bias)

    # timm's model interface, so fastai/timm tooling treats it like any timm model
    def get_classifier(self) -> nn.Module:
        return self.fc

    def reset_classifier(self, num_classes: int, global_pool: str = "avg") -> None:
        self.num_classes = num_classes
        self.fc = nn.Linear(self.num_features, num_classes) if num_classes else nn.Identity()

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.blocks(self.stem(x))

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        x = x.mean((2, 3))
        if self.drop_rate:
            x = F.dropout(x, self.drop_rate, self.training)
        return x if pre_logits else self.fc(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))


# timm's model metadata (input size, classifier name); no weights: He et al.'s ResNets are trained from scratch
default_cfgs = generate_default_cfgs({
    f"cifar_resnet{d}": {"url": "", "num_classes": 10, "input_size": (3, 32, 32), "pool_size": (8, 8),
                         "mean": (0.4914, 0.4822, 0.4465), "std": (0.2470, 0.2435, 0.2616),
                         "first_conv": "stem.0", "classifier": "fc"}
    for d in CIFAR_DEPTHS
})


def _cifar_resnet(depth: int, pretrained: bool, **kwargs) -> CifarResNet:
    if pretrained and not (kwargs.get("pretrained_cfg_overlay") or {}).get("file"):  # a local file is fine
        raise ValueError(f"cifar_resnet{depth} has no pretrained weights; train it from scratch (--no-pretrained)")
    return build_model_with_cfg(CifarResNet, f"cifar_resnet{depth}", pretrained, depth=depth, **kwargs)


@register_model
def cifar_resnet20(pretrained: bool = False, **kwargs) -> CifarResNet:
    "ResNet-20 for CIFAR (He et al., 2016), 0.27M parameters."
    return _cifar_resnet(20, pretrained, **kwargs)


@register_model
def cifar_resnet32(pretrained: bool = False, **kwargs) -> CifarResNet:
    "ResNet-32 for CIFAR (He et al., 2016), 0.46M parameters."
    return _cifar_resnet(32, pretrained, **kwargs)


@register_model
def cifar_resnet44(pretrained: bool = False, **kwargs) -> CifarResNet:
    "ResNet-44 for CIFAR (He et al., 2016), 0.66M parameters."
    return _cifar_resnet(44, pretrained, **kwargs)


@register_model
def cifar_resnet56(pretrained: bool = False, **kwargs) -> CifarResNet:
    "ResNet-56 for CIFAR (He et al., 2016), 0.85M parameters; the paper's Table 3 network."
    return _cifar_resnet(56, pretrained, **kwargs)


@register_model
def cifar_resnet110(pretrained: bool = False, **kwargs) -> CifarResNet:
    "ResNet-110 for CIFAR (He et al., 2016), 1.7M parameters."
    return _cifar_resnet(110, pretrained, **kwargs)


def has_pretrained(
    arch: str,  # a timm model name
) -> bool:
    "Whether timm knows pretrained weights for `arch` (they may still need downloading)."
    return timm.is_model_pretrained(arch)


def list_backbones(
    pattern: str = "*",  # shell-style filter on the name, e.g. "cifar_*" or "*resnet*"
) -> list[tuple[str, bool]]:  # (name, has pretrained weights) for each match, sorted
    "The backbones `create_model` accepts: every timm model, the CIFAR ResNets among them."
    pretrained = {n.split(".")[0] for n in timm.list_pretrained()}
    names = sorted(n for n in timm.list_models() if fnmatch.fnmatch(n, pattern))
    return [(n, n in pretrained) for n in names]


def check_arch(
    arch: str,  # a timm model name
    pretrained: bool = False,  # whether its pretrained weights will be loaded
) -> None:
    """Raise, naming the problem, if `create_model(arch, ..., pretrained)` would fail: an unknown name, no
    pretrained weights, or weights that cannot be fetched (which a run finds out before it writes anything)."""
    if not timm.is_model(arch):
        close = difflib.get_close_matches(arch, timm.list_models(), n=3)
        hint = f"; did you mean {', '.join(close)}?" if close else "; `fastgr models` lists them"
        raise ValueError(f"unknown architecture {arch!r}{hint}")
    if pretrained and not has_pretrained(arch):
        raise ValueError(f"{arch} has no pretrained weights in timm; pass --no-pretrained")
    if pretrained:
        create_model(arch, 2, 3, pretrained=True)  # fetches (or finds in the cache) the weights


def check_model(
    arch: str,  # a timm model name
    num_classes: int,  # classes of the task
    in_chans: int,  # input channels
    pretrained: bool = False,  # timm's pretrained weights
    weights: str | Path | None = None,  # a local weights file (`create_finetune_model`)
) -> None:
    "Raise, naming the problem, if the run's model cannot be built: checked before a run folder changes."
    check_arch(arch, pretrained and weights is None)
    if weights is not None:
        create_finetune_model(arch, num_classes, in_chans, weights)


def create_model(
    arch: str,  # a timm model name, e.g. "cifar_resnet56", "resnet18", "convnext_atto"
    num_classes: int,  # classes of the task
    in_chans: int = 3,  # input channels (1 for grayscale)
    pretrained: bool = False,  # load timm's pretrained weights (needs the internet or a filled cache)
    **kwargs,  # passed on to `timm.create_model`
) -> nn.Module:
    "Create a backbone with a fresh `num_classes` head; errors name the problem in one line."
    check_arch(arch)
    if pretrained and not has_pretrained(arch):
        raise ValueError(f"{arch} has no pretrained weights in timm; pass --no-pretrained")
    try:
        return timm.create_model(arch, pretrained=pretrained, num_classes=num_classes, in_chans=in_chans, **kwargs)
    except ValueError:
        raise
    except Exception as e:
        if pretrained and _looks_offline(e):
            raise RuntimeError(
                f"could not fetch pretrained weights for {arch} (offline?): pass --no-pretrained, or fill the "
                "Hugging Face cache (HF_HOME) on a machine with internet access"
            ) from e
        raise


def create_finetune_model(
    arch: str,  # a timm model name
    num_classes: int,  # classes of the task
    in_chans: int = 3,  # input channels (timm adapts a pretrained RGB stem to 1 channel)
    weights: str | Path | None = None,  # a local checkpoint of `arch` (state dict, .pth/.pt or .safetensors); None:
    # timm's pretrained weights (downloaded, or from the Hugging Face cache)
) -> nn.Sequential:
    """The model `vision_learner` builds for a timm backbone: `Sequential(body, head)`, the body pretrained (timm's
    weights or `weights`) without its classifier, fastai's new head (`create_head`) on top, split in two by fastai's
    `default_split` so that `Learner.freeze` trains the head (and every batch-norm layer) alone.

    `weights` may also hold such a whole model (keys `0.` for the body, `1.` for the head: `learn.model.state_dict()`
    of an earlier fine-tuning); its head must then have `num_classes` outputs. A file that does not fit is named,
    with what does not fit, in a one-line `ValueError`."""
    from fastai.vision.learner import create_timm_model

    check_arch(arch)
    whole = None
    if weights is not None:
        weights = Path(weights)
        if not weights.is_file():
            raise FileNotFoundError(2, "no such weights file", str(weights))
        sd = _read_weights(weights)
        if sd and all(k.split(".", 1)[0] in ("0", "1") for k in sd):
            whole = sd  # a fastai body + head
    elif not has_pretrained(arch):
        raise ValueError(f"{arch} has no pretrained weights in timm; pass --no-pretrained, or --weights FILE")
    # timm reads a local file itself (pretrained_cfg_overlay's "file"): the classifier dropped, the stem adapted
    overlay = {"pretrained_cfg_overlay": {"file": str(weights)}} if weights is not None and whole is None else {}
    try:
        model, _ = create_timm_model(arch, num_classes, pretrained=whole is None, n_in=in_chans, **overlay)
    except RuntimeError as e:
        if weights is not None and "state_dict" in str(e):
            raise ValueError(f"{weights} does not fit {arch}: {_mismatch(str(e))}") from None
        if weights is None and _looks_offline(e):
            raise RuntimeError(f"could not fetch pretrained weights for {arch} (offline?): pass --weights FILE, "
                               "--no-pretrained, or fill the Hugging Face cache (HF_HOME)") from e
        raise
    except Exception as e:
        if weights is None and _looks_offline(e):
            raise RuntimeError(f"could not fetch pretrained weights for {arch} (offline?): pass --weights FILE, "
                               "--no-pretrained, or fill the Hugging Face cache (HF_HOME)") from e
        raise
    if whole is not None:
        out_w = [k for k, v in whole.items() if k.startswith("1.") and k.endswith(".weight") and v.ndim == 2]
        if out_w and whole[out_w[-1]].shape[0] != num_classes:
            raise ValueError(f"{weights} is a model for {whole[out_w[-1]].shape[0]} classes; the data has "
                             f"{num_classes}")
        try:
            model.load_state_dict(whole)
        except RuntimeError as e:
            raise ValueError(f"{weights} does not fit {arch}: {_mismatch(str(e))}") from None
    return model


def _read_weights(path: Path) -> dict:
    "A checkpoint's state dict, as timm reads one (safetensors or torch; nested state_dict/model keys unwrapped)."
    from timm.models import load_state_dict

    try:
        sd = load_state_dict(str(path))
    except Exception as e:  # noqa: BLE001 - any unreadable file means the same fix
        raise ValueError(f"{path} is not a readable weights file ({type(e).__name__}): save a state dict with "
                         "torch.save(model.state_dict(), path) or safetensors") from None
    if not isinstance(sd, dict) or not all(isinstance(v, torch.Tensor) for v in sd.values()):
        raise ValueError(f"{path} holds no state dict of tensors")
    return sd


def _mismatch(message: str) -> str:
    "torch's long load_state_dict error, summed up in one line."
    import re

    parts = []
    for kind in ("Missing", "Unexpected"):
        m = re.search(kind + r' key\(s\) in state_dict: ((?:"[^"]+"(?:, )?)+)', message)
        if m:
            keys = re.findall(r'"([^"]+)"', m.group(1))
            parts.append(f"{len(keys)} {kind.lower()} key(s), e.g. {keys[0]}")
    sizes = re.findall(r"size mismatch for (\S+): copying a param with shape torch.Size\((\[[^\]]*\])\) from "
                       r"checkpoint, the shape in current model is torch.Size\((\[[^\]]*\])\)", message)
    if sizes:
        k, a, b = sizes[0]
        parts.append(f"{len(sizes)} shape mismatch(es), e.g. {k} is {a} in the file and {b} in the model")
    return "; ".join(parts) or " ".join(message.split())[:200]


def model_stats(
    arch: str,  # a timm model name
) -> tuple[list[float], list[float]] | None:
    "The per-channel (mean, std) its pretrained weights expect, as `vision_learner` normalises; None if unknown."
    cfg = timm.models.get_pretrained_cfg(arch) if hasattr(timm.models, "get_pretrained_cfg") else None
    if cfg is None:
        return None
    mean, std = getattr(cfg, "mean", None), getattr(cfg, "std", None)
    return (list(mean), list(std)) if mean and std else None


def _looks_offline(e: BaseException) -> bool:
    names = {type(x).__name__ for x in _chain(e)}
    text = " ".join(str(x) for x in _chain(e)).lower()
    return bool(names & {"ConnectionError", "LocalEntryNotFoundError", "OfflineModeIsEnabled", "URLError",
                         "MaxRetryError", "NameResolutionError", "Timeout", "HfHubHTTPError"}) or any(
        w in text for w in ("offline", "connection", "resolve host", "network", "cannot find the requested files"))


def _chain(e: BaseException | None):
    seen = set()
    while e is not None and id(e) not in seen:
        seen.add(id(e))
        yield e
        e = e.__cause__ or e.__context__
