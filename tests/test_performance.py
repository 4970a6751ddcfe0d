"""GR's cost: no host synchronisation in its step, an overhead that stays small, torch.compile compatibility."""

import time

import pytest
import torch
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode

from fastgr import GRCallback, gr_terms
from tests.test_callback import Grab, fit, make_learner


class CountOps(TorchDispatchMode):
    def __init__(self):
        super().__init__()
        self.ops = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.ops.append(str(func.overloadpacket))
        return func(*args, **(kwargs or {}))


def test_gr_step_reads_nothing_back_from_the_device_but_the_cpu_label_check():
    """`.item()`, `bool()`, `int()` on a tensor dispatch `aten._local_scalar_dense`: a host sync on a GPU. GR's
    step does it only for the label-range check on CPU tensors (min and max); on CUDA that check is
    `torch._assert_async`, so the step issues no synchronisation at all."""
    z = torch.randn(128, 10, requires_grad=True)
    y = torch.randint(0, 10, (128,))
    with CountOps() as counter:
        terms = gr_terms(z, y, 1.0, 16.0, mix=0.5)
        (terms.gradient.detach() * z).sum().backward()
    reads = [op for op in counter.ops if "local_scalar_dense" in op]
    assert len(reads) == 2, reads
    assert len(counter.ops) < 80  # a few dozen elementwise kernels over (B, C)


def small_cnn(c=10):
    return nn.Sequential(nn.Conv2d(3, 32, 3, padding=1), nn.BatchNorm2d(32), nn.ReLU(), nn.MaxPool2d(2),
                         nn.Conv2d(32, 64, 3, padding=1), nn.BatchNorm2d(64), nn.ReLU(),
                         nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(64, c))


def test_gr_overhead_on_cpu_is_small():
    """Interleaved repetitions of the same training step with and without GR, medians: a generous bound for a
    shared CI machine (bench/gr_overhead.py measures it properly)."""
    torch.manual_seed(0)
    model = small_cnn()
    opt = torch.optim.SGD(model.parameters(), 0.01, momentum=0.9)
    x, y = torch.randn(128, 3, 32, 32), torch.randint(0, 10, (128,))

    def step(gr: bool):
        logits = model(x)
        if gr:
            loss = (gr_terms(logits, y, 1.0, 16.0).gradient.detach() * logits).sum()
        else:
            loss = nn.functional.cross_entropy(logits, y)
        opt.zero_grad()
        loss.backward()
        opt.step()

    times = {True: [], False: []}
    for _ in range(2):
        step(True), step(False)  # warm-up
    for rep in range(8):
        for gr in ((True, False) if rep % 2 else (False, True)):
            t0 = time.perf_counter()
            step(gr)
            times[gr].append(time.perf_counter() - t0)
    ratio = sorted(times[True])[4] / sorted(times[False])[4]
    assert ratio < 1.3, (ratio, times)


def test_compiled_model_trains_with_gr_like_eager():
    from fastgr.models import create_model

    x, y = torch.randn(16, 3, 16, 16), torch.randint(0, 10, (16,))
    torch.manual_seed(0)
    eager = create_model("cifar_resnet20", 10)
    state = {k: v.clone() for k, v in eager.state_dict().items()}
    # GR lives outside the model: compiling the model adds no graph break to it
    explanation = torch._dynamo.explain(eager)(x)
    assert explanation.graph_break_count == 0 and explanation.graph_count == 1
    torch.manual_seed(0)
    compiled_model = create_model("cifar_resnet20", 10)
    compiled_model.load_state_dict(state)
    compiled = torch.compile(compiled_model, backend="aot_eager")
    grads = {}
    for name, model in (("eager", eager), ("compiled", compiled)):
        grab = Grab()
        learn = make_learner(x.flatten(1), y, bs=16, c=10, cbs=[GRCallback(lam=1.0, beta=16.0), grab])
        learn.model = nn.Sequential(nn.Unflatten(1, (3, 16, 16)), model)
        fit(learn, epochs=1, lr=0.0)
        grads[name] = grab.grads[0]
    for a, b in zip(grads["eager"], grads["compiled"]):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)
    assert any(g.abs().max() > 0 for g in grads["eager"])


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_half_precision_logits_give_the_float32_gradient_rounded(dtype):
    z = torch.randn(64, 10) * 3
    y = torch.randint(0, 10, (64,))
    exact = gr_terms(z.to(dtype).float(), y).gradient
    half = gr_terms(z.to(dtype), y).gradient
    assert half.dtype == dtype
    torch.testing.assert_close(half.float(), exact, rtol=1e-2, atol=1e-4)
