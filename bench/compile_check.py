"""torch.compile with GR on CUDA: graph breaks in the model, GR's parameter gradients compiled vs eager, step time.

    uv run python bench/compile_check.py --device cuda      # cifar_resnet56, bs 128

1. `torch._dynamo.explain` of the model (train mode, bf16 autocast): graphs and graph breaks;
2. one GR step (lam 1, beta 16: `fastgr.gradient.gr_gradient` into the logits) of the same weights and batch,
   eager and `torch.compile`d, in float32 (TF32 off) and in bf16 autocast: the relative L2 distance and cosine of
   all gradients, and the largest per-parameter relative L2 distance; beside it, eager bf16 against eager float32
   (the size of bf16's own rounding);
3. the training phase of `gr_learner` (GR, bf16, channels-last) with the model eager and compiled: median time
   per step over interleaved repetitions, and the first compiled epoch's extra time (compilation).
Prints one JSON line.
"""

from __future__ import annotations

import argparse
import copy
import json
import statistics

import torch


def gr_grads(m, x, y, amp: bool) -> list[torch.Tensor]:
    "Parameter gradients of one GR step (lam 1, beta 16) of model `m` on batch (x, y)."
    from fastgr.gradient import gr_gradient

    m.zero_grad(set_to_none=True)
    with torch.autocast("cuda", dtype=torch.bfloat16, enabled=amp):
        logits = m(x)
    g = gr_gradient(logits.float(), y, 1.0, 16.0)
    (g.to(logits.dtype) * logits).sum().backward()
    return [p.grad.float().clone() for p in m.parameters()]


def compare(ref: list[torch.Tensor], other: list[torch.Tensor]) -> dict:
    "How far `other`'s gradients are from `ref`'s: overall and per parameter (relative L2), and their cosine."
    e, c = (torch.cat([g.flatten() for g in gs]) for gs in (ref, other))
    # per parameter over those whose gradient is not ~0 (a block's conv2 under timm's zero-initialised last
    # batch-norm has an exactly zero gradient at the start, where any rounding is 100% of it)
    big = [(a, b) for a, b in zip(ref, other) if a.norm() > 1e-6 * e.norm()]
    rel = [((a - b).norm() / a.norm()).item() for a, b in big]
    return {"rel_l2": ((c - e).norm() / e.norm()).item(),
            "cosine": torch.nn.functional.cosine_similarity(c, e, dim=0).item(),
            "max_param_rel_l2": max(rel), "median_param_rel_l2": statistics.median(rel), "params": len(ref),
            "params_nonzero": len(big)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--arch", default="cifar_resnet56")
    ap.add_argument("--bs", type=int, default=128)
    ap.add_argument("--steps", type=int, default=100)
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--out", default=None)
    ap.add_argument("--mode", default=None, help="torch.compile mode: default, reduce-overhead (CUDA graphs), ...")
    ap.add_argument("--skip-timing", action="store_true", help="graph breaks and gradients only")
    a = ap.parse_args()

    from fastai.data.core import DataLoaders
    from pipeline_speed import PhaseTimer

    from fastgr import ImageTensors, TensorDL, gr_learner
    from fastgr.config import versions
    from fastgr.models import create_model

    dev = torch.device(a.device)
    torch.manual_seed(0)
    out = {"device": torch.cuda.get_device_name(dev), "arch": a.arch, "bs": a.bs, "mode": a.mode or "default",
           "versions": versions()}

    model = create_model(a.arch, 10, 3).to(dev, memory_format=torch.channels_last).train()
    x = torch.randn(a.bs, 3, 32, 32, device=dev).contiguous(memory_format=torch.channels_last)
    y = torch.randint(0, 10, (a.bs,), device=dev)
    with torch.autocast("cuda", dtype=torch.bfloat16):
        ex = torch._dynamo.explain(model)(x)
    out["graphs"], out["graph_breaks"] = ex.graph_count, ex.graph_break_count
    out["break_reasons"] = [str(r.reason)[:200] for r in ex.break_reasons]
    torch._dynamo.reset()

    tf32 = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    compiled = torch.compile(copy.deepcopy(model), mode=a.mode)
    eager32 = gr_grads(model, x, y, amp=False)
    out["grad_fp32"] = compare(eager32, gr_grads(compiled, x, y, amp=False))  # compiled vs eager, float32
    torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = tf32
    eager16 = gr_grads(model, x, y, amp=True)
    out["grad_bf16"] = compare(eager16, gr_grads(compiled, x, y, amp=True))  # compiled vs eager, bf16 autocast
    out["grad_bf16_eager_vs_fp32"] = compare(eager32, eager16)  # the scale of bf16's own rounding
    print(json.dumps(out), flush=True)
    if a.skip_timing:
        if a.out:
            with open(a.out, "w") as f:
                f.write(json.dumps(out) + "\n")
        return

    n = a.bs * a.steps
    xs = torch.randint(0, 256, (n, 3, 32, 32), dtype=torch.uint8)
    ys = torch.randint(0, 10, (n,))
    common = dict(mean=[0.5] * 3, std=[0.25] * 3, device=dev, channels_last=True)
    runs, first = {}, {}
    for mode in ("eager", "compiled"):
        dl = TensorDL(ImageTensors(xs, ys), a.bs, shuffle=True, drop_last=True, augment="crop+flip", **common)
        dls = DataLoaders(dl, TensorDL(ImageTensors(xs[: a.bs], ys[: a.bs]), a.bs, **common), device=dev)
        timer = PhaseTimer(torch.cuda.synchronize)
        learn = gr_learner(dls, a.arch, loss="gr", lam=1.0, beta=16.0, amp=True, cbs=[timer],
                           compile=(a.mode or "default") if mode == "compiled" else None)

        def run(learn=learn, timer=timer):
            with learn.no_bar(), learn.no_logging():
                learn.fit(1, 0.01)
            return timer.times[-1]

        first[mode] = run()  # compiles (and cuDNN's search)
        runs[mode] = run
    times = {m: [] for m in runs}
    for rep in range(a.reps):
        for m in (("eager", "compiled") if rep % 2 == 0 else ("compiled", "eager")):
            times[m].append(runs[m]())
    ms = {m: 1e3 * statistics.median(t) / a.steps for m, t in times.items()}
    out.update(ms_per_step=ms, speedup=ms["eager"] / ms["compiled"],
               first_epoch_s=first, compile_s=first["compiled"] - first["eager"])
    line = json.dumps(out)
    print(line, flush=True)
    if a.out:
        with open(a.out, "w") as f:
            f.write(line + "\n")


if __name__ == "__main__":
    main()
