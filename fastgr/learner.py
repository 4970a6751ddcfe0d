"""`gr_learner`: the one place where a run's model, loss, optimiser, callbacks and mixed precision come together.

The CLI, the tuner, label correction's retraining, the benchmarks and the notebooks all build their learners
here, so a figure in BENCHMARKS.md and a `fastgr train` run use the same training recipe.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import partial

import torch
from fastai.callback.core import Callback
from fastai.callback.fp16 import MixedPrecision
from fastai.callback.mixup import MixUp
from fastai.learner import Learner
from fastai.losses import CrossEntropyLossFlat
from fastai.metrics import AvgMetric
from fastai.torch_core import set_seed, trainable_params
from torch import nn

from .callback import GRCallback
from .config import LOSSES
from .dynamics import TrainingDynamics
from .hostmem import TrimHostHeap
from .losses import baseline_loss
from .monitor import EmphasisMonitor
from .optim import ForeachSGD
from .presets import DEFAULT_WARMUP, FIXED_DEFAULT, REFERENCE_EPS
from .ranks import rank, world_size
from .schedule import fit_epoch, fit_schedule
from .signals import NoiseSignals
from .stream import StreamDL
from .telemetry import FitMonitor, SmoothLossOnDevice

__all__ = ["gr_learner", "fit_schedule", "fit_epoch", "SeedEpoch", "test_acc", "predict_probs", "unwrapped"]


def test_acc(inp: torch.Tensor, targ: torch.Tensor) -> torch.Tensor:
    "Accuracy on the held-out split (its labels are never corrupted)."
    return (inp.argmax(dim=1) == targ).float().mean()


class SeedEpoch(Callback):
    """Training epoch `e` draws the batches of `(seed, e)` from a loader with `set_epoch` (`TensorDL`), as
    `DistributedSampler.set_epoch` does: a fit resumed at epoch `e` sees what the uninterrupted one saw.

    Under a launch of several processes every rank also seeds its own random draws (dropout, fastai's batch
    augmentation) from `(seed, e, rank)`: the ranks' draws differ, and a resumed launch repeats them."""

    order = -5  # after fastai's TrainEvalCallback (-10) has set the epoch's state, before the batches

    def before_train(self):
        epoch = fit_epoch(self.learn)
        if hasattr(self.learn.dl, "set_epoch"):
            self.learn.dl.set_epoch(epoch)
        if world_size() > 1:
            seed = getattr(self.learn.dls.train, "seed", 0)
            set_seed((seed * 1_000_003 + epoch) * 7_919 + rank() + 1)


def unwrapped(model: nn.Module) -> nn.Module:
    "The model itself, out of the wrappers a run may train it in: DDP (a launch) and torch.compile (`--compile`)."
    if isinstance(model, nn.parallel.DistributedDataParallel):
        model = model.module
    return getattr(model, "_orig_mod", model)


def _backbone(arch: str, n_out: int, in_chans: int, weights, finetune: bool) -> nn.Module:
    "A model by name, through timm: the library's one import of it, so that `GRCallback` needs fastai and torch alone."
    try:
        from .finetune import create_finetune_model
        from .models import create_model
    except ModuleNotFoundError as e:
        if e.name != "timm":
            raise
        raise ImportError(f"a backbone by name ({arch!r}) needs timm: pip install timm, or 'fastgr[cli]'; "
                          "or pass your own model") from None
    return create_finetune_model(arch, n_out, in_chans, weights) if finetune else create_model(arch, n_out, in_chans)


def _split_unwrapped(splitter, model: nn.Module):
    return splitter(unwrapped(model))


def gr_learner(
    dls,  # fastai DataLoaders of images and integer labels (`make_dataloaders`, or any of your own)
    arch: str | nn.Module,  # a timm model name (`fastgr models`) or a model whose output is the logits
    loss: str = "gr",  # gr (gradient rescaling), or a baseline: ce, ls, gce, sce (`fastgr.losses`)
    lam: float | None = FIXED_DEFAULT.lam,  # GR's emphasis focus parameter; None (with beta None): automatic
    beta: float | None = FIXED_DEFAULT.beta,  # GR's emphasis spread parameter (`GRCallback`)
    warmup: float = DEFAULT_WARMUP,  # fraction of training over which GR takes over from cross-entropy
    warmup_mode: str = "blend",  # blend or ramp (docs/design.md, "emphasis warm-up")
    eps: float = REFERENCE_EPS,  # the reference layer's saturation of GR's direction; 0: the bare formula
    n_out: int | None = None,  # classes; `len(dls.vocab)` if None
    in_chans: int | None = None,  # input channels; those of one training batch if None
    pretrained: bool = False,  # fine-tune timm's pretrained weights: fastai's body + new head (`create_finetune_model`)
    weights: str | None = None,  # ... or these local weights of `arch` (a state dict, .pth or .safetensors)
    lr: float = 0.1,  # the default peak learning rate of `fit_one_cycle`
    wd: float = 5e-4,  # L2 weight decay (SGD, momentum 0.9, not on batch-norm and bias parameters)
    moms: tuple[float, float, float] = (0.9, 0.9, 0.9),  # `fit_one_cycle`'s momentum schedule: constant 0.9
    amp: bool = False,  # bf16 mixed precision (fastai's `MixedPrecision`); needs CUDA
    compile: str | None = None,  # torch.compile the model in this mode (`config.COMPILE_MODES`); None: eager
    true_labels: Sequence[int] | torch.Tensor | None = None,  # (N,) true training labels: the fit of them too
    record_examples: bool = False,  # keep (index, label, p, weight) of GR's last epoch's examples (`EmphasisMonitor`)
    record_dynamics: bool = False,  # every example's AUM and late p of its label (`fastgr.dynamics`), and the
    # per-epoch noise signals (`fastgr.signals`), any loss
    metrics=None,  # fastai metrics; `test_acc` (accuracy on the held-out split) if None
    mixup: float = 0.0,  # MixUp's alpha (fastai's MixUp) with a baseline loss; 0: none
    cbs: list[Callback] | None = None,  # more callbacks
) -> Learner:
    """A fastai `Learner` that trains as `fastgr train` does: SGD with momentum 0.9 and L2 weight decay,
    cross-entropy as the logged loss, GR's gradient (its `GRCallback`, `learn.gr`, and the `EmphasisMonitor` of its
    weights, `learn.emphasis_monitor`; neither with a baseline loss),
    channels-last and bf16 on CUDA, the host heap trimmed every step when streaming files on the CPU
    (`TrimHostHeap`), per-epoch columns of GR's telemetry and of the fit of the given labels (and, given
    `true_labels`, of the true ones). `fit_schedule(learn, epochs, lr, finetune=pretrained or weights)` is
    then the command's schedule (`learn.fit_one_cycle(epochs)` from scratch, `fine_tune`'s when fine-tuning)."""
    if loss not in LOSSES:
        raise ValueError(f"unknown loss {loss!r}; choose one of {', '.join(LOSSES)}")
    device = torch.device(getattr(dls, "device", None) or "cpu")
    finetune = isinstance(arch, str) and (pretrained or weights is not None)  # fastai's body + head, fine_tune
    if amp and device.type != "cuda":
        raise ValueError("amp (bf16 mixed precision) needs a CUDA device")
    if isinstance(arch, str):
        n_out = n_out if n_out is not None else len(dls.vocab)
        if in_chans is None:
            x = dls.train.x if hasattr(dls.train, "x") else dls.one_batch()[0]
            in_chans = int(x.shape[1])
        model = _backbone(arch, n_out, in_chans, weights, finetune)
    else:
        model = arch
    splitter = trainable_params
    if finetune:
        from fastai.vision.learner import default_split  # body, head: what `Learner.freeze` needs

        splitter = default_split
    if device.type == "cuda":
        model = model.to(device, memory_format=torch.channels_last)
    if compile:
        # the learner holds the compiled module; checkpoints and the export hold the model itself (`unwrapped`)
        model = torch.compile(model, mode=compile)
        splitter = partial(_split_unwrapped, splitter)
    callbacks = [SeedEpoch(), SmoothLossOnDevice(),
                 FitMonitor(None if true_labels is None else torch.as_tensor(true_labels))]
    if loss == "gr":
        callbacks += [GRCallback(lam, beta, eps=eps, warmup=warmup, warmup_mode=warmup_mode),
                      EmphasisMonitor(record_examples=record_examples)]
    if record_dynamics:
        callbacks += [TrainingDynamics(len(dls.train.dataset)), NoiseSignals(len(dls.train.dataset))]
    if mixup:
        if loss == "gr":
            raise ValueError("GR with MixUp is refused: MixUp mixes labels into soft targets; use a baseline loss")
        callbacks.append(MixUp(mixup))
    if amp:
        callbacks.append(MixedPrecision(amp_mode="bf16"))
    if device.type == "cpu" and isinstance(dls.train, StreamDL):  # peak host memory that does not grow with files
        callbacks.append(TrimHostHeap())
    loss_func = CrossEntropyLossFlat() if loss == "gr" else baseline_loss(loss)  # GR logs cross-entropy
    return Learner(dls, model, loss_func=loss_func, opt_func=partial(ForeachSGD, mom=0.9), lr=lr,
                   metrics=metrics if metrics is not None else [AvgMetric(test_acc)], wd=wd, moms=moms,
                   wd_bn_bias=False, cbs=callbacks + list(cbs or []),
                   splitter=splitter)


def predict_probs(
    learn: Learner,  # a trained learner
    dl=None,  # the loader to predict; the training set without shuffling or augmentation if None
) -> torch.Tensor:  # (N, C) float32 class probabilities, in dataset order
    "Class probabilities of every example of `dl`, as the model sees them at test time."
    if dl is None:
        dl = learn.dls.train.new(shuffle=False, drop_last=False, augment="none")
    with learn.no_bar(), learn.no_logging():
        probs, _ = learn.get_preds(dl=dl)
    return probs.float()
