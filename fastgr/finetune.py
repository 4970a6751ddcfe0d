"""Fine-tuning's model: the one `vision_learner` builds for a timm backbone, its body pretrained (timm's weights, or
a local file for machines without internet), fastai's new head on top; the inputs' statistics those weights expect;
and `check_model`, which builds it once before a run folder is touched so that a file that does not fit is named.
"""

from __future__ import annotations

import contextlib
from pathlib import Path

import timm
import torch
from torch import nn

from .models import check_arch, has_pretrained, looks_offline

__all__ = ["create_finetune_model", "check_model", "model_stats"]


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
        with _loads() as loads:
            model, _ = create_timm_model(arch, num_classes, pretrained=whole is None, n_in=in_chans, **overlay)
    except RuntimeError as e:
        if weights is not None and "state_dict" in str(e):
            raise ValueError(f"{weights} does not fit {arch}: {_mismatch(str(e))}") from None
        if weights is None and looks_offline(e):
            raise RuntimeError(f"could not fetch pretrained weights for {arch} (offline?): pass --weights FILE, "
                               "--no-pretrained, or fill the Hugging Face cache (HF_HOME)") from e
        raise
    except Exception as e:
        if weights is None and looks_offline(e):
            raise RuntimeError(f"could not fetch pretrained weights for {arch} (offline?): pass --weights FILE, "
                               "--no-pretrained, or fill the Hugging Face cache (HF_HOME)") from e
        raise
    if overlay and loads and (loads[0].missing_keys or loads[0].unexpected_keys):
        raise ValueError(f"{weights} does not fit {arch}: {_unfit(loads[0].missing_keys, loads[0].unexpected_keys)}")
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


@contextlib.contextmanager
def _loads():
    """The results of every `load_state_dict` while timm builds a model: once it has dropped a file's classifier,
    timm loads the rest non-strictly and only logs the keys that did not fit, so a body of another architecture
    would train half random (or wholly, sharing no key) without a word."""
    seen: list = []
    original = nn.Module.load_state_dict

    def recording(self, *args, **kwargs):
        result = original(self, *args, **kwargs)
        seen.append(result)
        return result

    nn.Module.load_state_dict = recording
    try:
        yield seen
    finally:
        nn.Module.load_state_dict = original


def _unfit(missing: list[str], unexpected: list[str]) -> str:
    "What of a weights file does not fit the model's body, in one line."
    parts = [f"{len(keys)} {kind} key(s), e.g. {', '.join(keys[:3])}" for kind, keys in
             (("missing", missing), ("unexpected", unexpected)) if keys]
    return "; ".join(parts) + " (the weights of another architecture?)"


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
