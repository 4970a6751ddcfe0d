"""The paper's Table 3 at r = 40%: CIFAR-10, ResNet-56, CE against GR (lam 1, beta 16) and GR + label correction.

    python3 ../shared/tools/unpack_cifar10.py .data/cifar10                                  # 50,000 + 10,000
    uv run python bench/reproduce_table3.py --data .data/cifar10 --protocol released         # on a GPU
    uv run python bench/reproduce_table3.py --data .data/cifar10 --protocol text             # on a GPU
    uv run python bench/reproduce_table3.py --data .data/cifar5k --small                     # a CPU-sized check

On one GPU the rows can run as separate processes side by side (they share the device): `--rows ce`, `--rows gr
--probs P` (writes GR's training-set probabilities), `--rows correct --probs P` (relabels from them and retrains),
each with its own `--out`; `--merge A.json B.json ... --out T.json` joins their rows into one table.
`--noise R` runs another row of Table 3 with the paper's lam and beta for R (`fastgr.presets.PAPER_SETTINGS`);
`--warmup W` gives GR's rows fastgr's warm-up (the paper has none), named apart in the table.
`--bs 256 --balanced` draws batches as the released solver does (256, class-balanced over the noisy labels:
`fastgr.loader.balanced_order`) instead of the issue's 128 at random; its rows are named apart.
`--thresholds T... --probs P` trains nothing: what `relabel` would change at each confidence threshold, from a GR
run's saved probabilities and the protocol's noise draw (precision, recall, the noise left).

Two protocols, both 40% symmetric noise, SGD momentum 0.9 with L2 weight decay, batch 128, pad-4 crop + flip,
lr 0.1 stepped down by 10x:
- `released`, the authors' released solver: 30k iterations, steps at 15k and 22k, weight decay 5e-4;
- `text`, the paper's Sec. 4.1: weight decay 1e-4, a step every 5k iterations; the text gives no total, so
  20k iterations (steps at 5k, 10k, 15k).
The paper's final test accuracies at r = 0.4: CE 60.9%, GR 83.3%, GR after label correction 85.3% (Tables 3,
9). `--small` shrinks the schedule to 1% and ResNet-20 (and says so). Every learner is `fastgr.gr_learner`, the
one `fastgr train` uses. Writes bench/results/table3_<protocol>[_small].json and prints a Markdown table beside
the paper's numbers.
"""

from __future__ import annotations

import argparse
import json
import time
from functools import partial
from pathlib import Path

import torch

PAPER = {"CE": 0.609, "GR": 0.833, "GR + correction": 0.853}  # r = 0.4
ROWS = {"ce": "CE", "gr": "GR", "correct": "GR + correction"}
PROTOCOLS = {
    "released": {"iters": 30000, "drops": (15000, 22000), "wd": 5e-4,
                 "source": "the authors' released solver (30k iterations, steps at 15k and 22k, wd 5e-4)"},
    "text": {"iters": 20000, "drops": (5000, 10000, 15000), "wd": 1e-4,
             "source": "the paper's text, Sec. 4.1 (lr x0.1 every 5k iterations, wd 1e-4; 20k iterations: the text "
                       "gives no total)"},
}


def row_name(key: str, warmup: float, bs: int = 128, balanced: bool = False) -> str:
    """A row's name in the table: GR's rows with fastgr's warm-up (not the paper's setting) say so, and so does a
    row whose batches are not the issue's 128 drawn at random."""
    notes = [f"warm-up {warmup:g}"] if key != "ce" and warmup else []
    if balanced or bs != 128:
        notes.append(f"{'class-balanced ' if balanced else 'batch '}{bs}")
    return f"{ROWS[key]} ({', '.join(notes)})" if notes else ROWS[key]


def paper_row(name: str) -> str:
    "The paper's row a table row stands beside: its name without the warm-up."
    return name.split(" (")[0]


def step_schedule(total: int, drops: tuple[int, ...], lr: float):
    "lr, then lr/10 after each of `drops` (iterations), as fastai ParamScheduler functions of pct_train."
    bounds = [d / total for d in drops]

    def sched(pos: float) -> float:
        return lr * 0.1 ** sum(pos >= b for b in bounds)

    return sched


def run(data, given, true, arch: str, lam_beta, device, iters: int, drops, wd: float, log,
        compile_mode: str | None = None, warmup: float = 0.0, bs: int = 128, balanced: bool = False) -> dict:
    from fastai.callback.core import Callback
    from fastai.callback.schedule import ParamScheduler

    class Progress(Callback):
        "One line an epoch: a run killed at its time limit still says how far it got."
        order = 60  # after the Recorder (50) has the epoch's values

        def after_epoch(self):
            v = self.recorder.values[-1]
            log(f"    epoch {self.epoch + 1}/{self.n_epoch}: test accuracy {float(v[2]):.4f} "
                f"({time.perf_counter() - t0:.0f} s)")

    from fastgr import gr_learner, make_dataloaders, predict_probs

    torch.manual_seed(0)
    cuda = device.type == "cuda"
    dls = make_dataloaders(data, given, bs=bs, device=device, seed=0, augment="crop+flip", channels_last=cuda,
                           balanced=balanced)
    gr = dict(loss="gr", lam=lam_beta[0], beta=lam_beta[1], warmup=warmup) if lam_beta else dict(loss="ce")
    # compile_mode: fastgr's eager step is bound by kernel launches on a GPU (BENCHMARKS.md, "GPU: one H100")
    learn = gr_learner(dls, arch, **gr, wd=wd, amp=cuda, true_labels=true, compile=compile_mode)
    epochs = max(1, round(iters / len(dls.train)))
    t0 = time.perf_counter()
    with learn.no_bar(), learn.no_logging():
        learn.fit(epochs, cbs=[ParamScheduler({"lr": step_schedule(epochs * len(dls.train), drops, 0.1)}),
                               Progress()])
    seconds = time.perf_counter() - t0
    accs = [float(v[2]) for v in learn.recorder.values]  # train_loss, valid_loss, test_acc, ...
    probs = predict_probs(learn)
    pred = probs.argmax(1).numpy()
    noisy = given != true
    out = {"warmup": warmup if lam_beta else None, "test_accuracy": accs[-1], "test_accuracy_best": max(accs),
           "seconds": seconds, "epochs": epochs, "curve": accs,  # test accuracy after each epoch
           "fit_corrupted": float((pred[noisy] == given[noisy]).mean()),
           "fit_intact": float((pred[~noisy] == given[~noisy]).mean())}
    log(f"  {epochs} epochs ({epochs * len(dls.train)} iterations): test accuracy {out['test_accuracy']:.4f} "
        f"(best {out['test_accuracy_best']:.4f}), fit of corrupted labels {out['fit_corrupted']:.3f}, of intact "
        f"{out['fit_intact']:.3f}, {seconds:.0f} s")
    return {**out, "probs": probs}


def merge(files: list[Path], out: Path) -> dict:
    "One table of the rows of several `--out` files of the same protocol and noise rate."
    from fastgr.files import write_text

    parts = [json.loads(f.read_text()) for f in files]
    keys = ("protocol", "noise")
    if len({tuple(p[k] for k in keys) for p in parts}) > 1:
        raise SystemExit("error: --merge takes results of one protocol and noise rate")
    result = {**parts[0], "rows": {}}
    for p in parts:
        result["rows"].update(p["rows"])
        result["correction"] = p.get("correction") or result.get("correction")
    order = [ROWS[k] for k in ROWS]  # CE, GR, correction; each row with a warm-up after the one without
    result["rows"] = dict(sorted(result["rows"].items(), key=lambda kv: (order.index(paper_row(kv[0])), kv[0])))
    write_text(out, json.dumps(result, indent=1) + "\n")
    return result


def plot(results: list[dict], path: Path) -> None:
    "Test accuracy per epoch of every row, one panel per protocol, the paper's final figures as dotted lines."
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(results), figsize=(5.5 * len(results), 4), sharey=True, squeeze=False)
    for ax, result in zip(axes[0], results):
        for name, row in result["rows"].items():
            curve = row.get("curve")
            if curve:
                its = [(i + 1) * result["iterations"] / len(curve) / 1000 for i in range(len(curve))]
                ax.plot(its, curve, label=f"{name}: {row['test_accuracy']:.3f}")
        for name, acc in PAPER.items():
            if result["noise"] == 0.4:
                ax.axhline(acc, ls=":", lw=1, color="grey")
                ax.annotate(f"paper {name} {acc:.3f}", (0, acc), fontsize=7, color="grey",
                            va="top" if name == "GR" else "bottom")
        ax.set(title=f"{result['protocol']}: {PROTOCOLS[result['protocol']]['iters'] // 1000}k iterations, "
                     f"r = {result['noise']:g}", xlabel="iterations (thousands)", ylim=(0, 1))
        ax.legend(fontsize=8, loc="lower right")
    axes[0][0].set_ylabel("test accuracy")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)


def threshold_rows(probs, given, true, thresholds) -> list[dict]:
    "`correction_report` of `relabel(probs, given, t)` for each threshold t: what a confidence threshold would buy."
    from fastgr.correction import correction_report, relabel

    pred = torch.as_tensor(probs).argmax(1).numpy()
    return [{"threshold": t, **correction_report(given, relabel(probs, given, t), true, pred)} for t in thresholds]


def print_thresholds(rows: list[dict], log) -> None:
    log("| threshold | relabelled | precision | recall | noise left | intact labels made wrong |\n"
        "|---|---|---|---|---|---|")
    for r in rows:
        log(f"| {r['threshold']:g} | {r['relabelled_fraction']:.3f} | {r['correction_precision']:.3f} | "
            f"{r['correction_recall']:.3f} | {r['noise_rate_after']:.3f} | {r['broken']:,} |")


def print_table(result: dict, log) -> None:
    log("| run | final (best) | paper | fit of corrupted / intact labels | minutes |\n|---|---|---|---|---|")
    for k, v in result["rows"].items():
        paper = f"{v['paper']:.3f}" if v.get("paper") is not None else "—"
        log(f"| {k} | {v['test_accuracy']:.3f} ({v['test_accuracy_best']:.3f}) | {paper} | "
            f"{v['fit_corrupted']:.3f} / {v['fit_intact']:.3f} | {v['seconds'] / 60:.1f} |")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default=".data/cifar10")
    ap.add_argument("--protocol", choices=list(PROTOCOLS), default="released")
    ap.add_argument("--noise", type=float, default=0.4, help="symmetric noise rate r (a row of Table 3)")
    ap.add_argument("--rows", nargs="+", choices=list(ROWS), default=list(ROWS))
    ap.add_argument("--probs", type=Path, default=None,
                    help="GR's training-set probabilities: written by --rows gr, read by --rows correct without gr")
    ap.add_argument("--arch", default=None, help="default: cifar_resnet56 (cifar_resnet20 with --small)")
    ap.add_argument("--small", action="store_true", help="a CPU-sized schedule: 1%% of the protocol's iterations")
    ap.add_argument("--device", default=None)
    ap.add_argument("--compile", default=None, metavar="MODE",
                    help="torch.compile the model: default, reduce-overhead (CUDA graphs), max-autotune")
    ap.add_argument("--bs", type=int, default=128, help="batch size (the released solver's is 256)")
    ap.add_argument("--balanced", action="store_true",
                    help="class-balanced batches of the noisy labels, as the released solver draws them")
    ap.add_argument("--warmup", type=float, default=0.0,
                    help="GR's warm-up (fraction of training at plain CE), fastgr's; the paper has none (0)")
    ap.add_argument("--out", type=Path, default=None)
    ap.add_argument("--merge", type=Path, nargs="+", default=None, help="join these --out files into --out")
    ap.add_argument("--figure", type=Path, default=None, metavar="PNG",
                    help="plot the merged results given as --results (one panel each) into PNG; trains nothing")
    ap.add_argument("--results", type=Path, nargs="+", default=None)
    ap.add_argument("--thresholds", type=float, nargs="+", default=None,
                    help="with --probs P of a finished GR run: relabel's effect at each confidence threshold; trains "
                         "nothing")
    a = ap.parse_args()
    log = partial(print, flush=True)
    if a.figure:
        if not a.results or not all(f.is_file() for f in a.results):
            raise SystemExit("error: --figure needs --results FILES of merged tables")
        plot([json.loads(f.read_text()) for f in a.results], a.figure)
        return
    if a.merge:
        if a.out is None:
            raise SystemExit("error: --merge needs --out")
        print_table(merge(a.merge, a.out), log)
        return
    if a.bs < 1:
        raise SystemExit(f"error: --bs must be at least 1, got {a.bs}")
    if a.thresholds and (a.probs is None or not a.probs.is_file()):
        raise SystemExit("error: --thresholds needs --probs of a finished GR run")
    if a.thresholds and not all(0 <= t <= 1 for t in a.thresholds):
        raise SystemExit("error: --thresholds are confidences in [0, 1]")
    if "correct" in a.rows and "gr" not in a.rows and (a.probs is None or not a.probs.is_file()):
        raise SystemExit("error: --rows correct without gr needs --probs of a finished GR run")

    from fastgr.config import resolve_device, versions
    from fastgr.correction import correction_report, relabel
    from fastgr.data import load_data
    from fastgr.files import write_text
    from fastgr.noise import symmetric_noise
    from fastgr.presets import PAPER_SETTINGS

    protocol = PROTOCOLS[a.protocol]
    setting = PAPER_SETTINGS[(10, a.noise)]
    lam_beta = (setting.lam, setting.beta)
    device = resolve_device(a.device)
    arch = a.arch or ("cifar_resnet20" if a.small else "cifar_resnet56")
    scale = 0.01 if a.small else 1.0
    iters = round(protocol["iters"] * scale)
    drops = tuple(round(d * scale) for d in protocol["drops"])
    data = load_data(a.data, 32)
    noisy = symmetric_noise(data.train_y.numpy(), a.noise, data.n_classes, seed=0)
    log(f"protocol: {protocol['source']}{' [scaled to 1%: not the paper schedule]' if a.small else ''}")
    log(f"{data.name}: {len(data.train_y)} training images ({a.noise:.0%} symmetric noise), {len(data.valid_y)} "
        f"test; {arch}, {iters} iterations of {a.bs}{' class-balanced' if a.balanced else ''}, drops at {drops}, "
        f"wd {protocol['wd']:g}, {device}")
    if a.thresholds:
        probs = torch.load(a.probs)
        if tuple(probs.shape) != (len(noisy.given), data.n_classes):
            raise SystemExit(f"error: --probs holds {tuple(probs.shape)} probabilities for {len(noisy.given)} "
                             f"training images of {data.n_classes} classes")
        rows = threshold_rows(probs, noisy.given, noisy.true, a.thresholds)
        if a.out:
            write_text(a.out, json.dumps({"protocol": a.protocol, "noise": a.noise, "probs": str(a.probs),
                                          "rows": rows}, indent=1) + "\n")
        print_thresholds(rows, log)
        return
    common = dict(arch=arch, device=device, iters=iters, drops=drops, wd=protocol["wd"], log=log, bs=a.bs,
                  balanced=a.balanced, compile_mode=a.compile, warmup=a.warmup)
    rows, report = {}, None
    name = partial(row_name, warmup=a.warmup, bs=a.bs, balanced=a.balanced)
    if "ce" in a.rows:
        log("CE")
        rows[name("ce")] = run(data, noisy.given, noisy.true, lam_beta=None, **common)
    if "gr" in a.rows:
        warm = f"fastgr's warm-up {a.warmup:g}" if a.warmup else "no warm-up"
        log(f"GR, lam {lam_beta[0]:g}, beta {lam_beta[1]:g} ({setting.source}; {warm})")
        rows[name("gr")] = run(data, noisy.given, noisy.true, lam_beta=lam_beta, **common)
        if a.probs is not None:
            a.probs.parent.mkdir(parents=True, exist_ok=True)
            torch.save(rows[name("gr")]["probs"], a.probs)
    if "correct" in a.rows:
        gr_row = name("gr")
        probs = rows[gr_row]["probs"] if gr_row in rows else torch.load(a.probs)
        corrected = relabel(probs, noisy.given)
        report = correction_report(noisy.given, corrected, noisy.true, probs.argmax(1).numpy())
        log(f"correction: relabelled {report['relabelled_fraction']:.3f}, precision "
            f"{report['correction_precision']:.3f}, recall {report['correction_recall']:.3f}; retraining")
        rows[name("correct")] = run(data, corrected, noisy.true, lam_beta=lam_beta, **common)
    paper = PAPER if a.noise == 0.4 else {}
    result = {"device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
              "protocol": a.protocol, "protocol_source": protocol["source"], "paper_schedule": not a.small,
              "noise": a.noise, "lam": lam_beta[0], "beta": lam_beta[1], "compile": a.compile,
              "iterations": iters, "bs": a.bs, "balanced": a.balanced, "drops": drops, "wd": protocol["wd"],
              "arch": arch, "data": str(a.data),
              "versions": versions(), "correction": report,
              "rows": {k: {**{m: v for m, v in r.items() if m != "probs"}, "paper": paper.get(paper_row(k))}
                       for k, r in rows.items()}}
    out = a.out or Path(f"bench/results/table3_{a.protocol}{'_small' if a.small else ''}.json")
    write_text(out, json.dumps(result, indent=1) + "\n")
    print_table(result, log)


if __name__ == "__main__":
    main()
