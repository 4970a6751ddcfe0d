"""Backbones: every timm model by name, plus He et al.'s CIFAR ResNets registered in timm's registry.

After `import fastgr.models`, `timm.create_model("cifar_resnet56", num_classes=10)` works like any timm model.
`create_model` is the one factory the CLI and the experiments use.
"""

from __future__ import annotations

import difflib
import fnmatch

import timm
import torch
from timm.models import build_model_with_cfg, generate_default_cfgs, register_model
from torch import nn
from torch.nn import functional as F

__all__ = ["CifarResNet", "CIFAR_DEPTHS", "create_model", "check_arch", "list_backbones", "has_pretrained"]

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
        fetch_pretrained(arch)


HUB = ("huggingface.co", 443)  # where timm's pretrained weights come from


def hub_reachable(
    timeout: float = 3.0,  # seconds to wait for a connection
) -> bool:
    "Whether the Hugging Face hub answers at all: one connection attempt, no retries."
    import socket

    try:
        socket.create_connection(HUB, timeout=timeout).close()
        return True
    except OSError:
        return False


def fetch_pretrained(
    arch: str,  # a timm model name with pretrained weights
) -> None:
    """Make sure `arch`'s pretrained weights can be loaded: from the Hugging Face cache if they are there, else
    downloaded. Offline and not cached, one line at once, where the hub's client would retry for a minute."""
    from unittest import mock

    try:
        with mock.patch("huggingface_hub.constants.HF_HUB_OFFLINE", True):  # the cache alone: no request at all
            create_model(arch, 2, 3, pretrained=True)
        return
    except Exception:  # noqa: BLE001 - not cached (or not from the hub): fetched below
        pass
    if not hub_reachable():
        raise RuntimeError(f"could not fetch pretrained weights for {arch}: {HUB[0]} cannot be reached (offline?) "
                           "and they are not in the Hugging Face cache; pass --weights FILE (a local copy), "
                           "--no-pretrained, or fill the cache (HF_HOME) on a machine with internet access")
    create_model(arch, 2, 3, pretrained=True)  # downloads them into the cache


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
        if pretrained and looks_offline(e):
            raise RuntimeError(
                f"could not fetch pretrained weights for {arch} (offline?): pass --no-pretrained, or fill the "
                "Hugging Face cache (HF_HOME) on a machine with internet access"
            ) from e
        raise


def looks_offline(e: BaseException) -> bool:
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
