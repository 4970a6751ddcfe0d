r"""GR against cross-entropy and the usual baselines as the training budget grows: the memorisation regime.

    python3 ../shared/tools/unpack_cifar10.py .data/cifar5k --train 500 --test 100
    python3 ../shared/tools/cifar10n_labels.py .data/cifar5k --key random_label1 --train 500 \
        --out .data/c10n_random1.csv
    python3 ../shared/tools/cifar10n_labels.py .data/cifar5k --key aggre_label --train 500 --out .data/c10n_aggre.csv
    uv run python bench/budget_sweep.py --case cifar5k_sym40 --epochs 120 --columns ce gr preset --keep runs/sweep
    uv run python bench/budget_sweep.py --table      # print the results table of BENCHMARKS.md, train nothing
    uv run python bench/budget_sweep.py --figure docs/budget_sweep.png
    uv run python bench/budget_sweep.py --case cifar5k_sym40 --epochs 120 --columns ce default --seed 1 \
        --keep runs/sweep
    uv run python bench/budget_sweep.py --seeds      # the seeds table of BENCHMARKS.md, train nothing
    # the fine-tuning rows (ft_*): a backbone pretrained on classes 0-4, fine-tuned on classes 5-9
    python3 ../shared/tools/unpack_cifar10.py .data/src04 --classes 0-4 --test 200
    python3 ../shared/tools/unpack_cifar10.py .data/ft59 --classes 5-9 --train 1000
    uv run python bench/finetune_source.py --keep runs/finetune_source
    uv run python bench/budget_sweep.py --case ft_sym40 --epochs 5 10 20 --columns ce gr --keep runs/sweep

Every run is one `train_run` (what `fastgr train` does) with the protocol of bench/cifar_budget.py: CIFAR
ResNet-20, pad-crop-flip, SGD one-cycle (max lr 0.1, momentum 0.9, L2 5e-4), batch 128, seed 0; the digits case
uses `fastgr train`'s own defaults. A column is one flag of the CLI (`COLUMNS`). Results, with each run's per-epoch
test accuracy and fit of the given and of the true labels, are merged into bench/results/budget_sweep.json under
`CASE/EPOCHS/COLUMN` as runs finish; with --keep an interrupted run resumes. A run with another `--seed` (a new
noise draw where the case draws one, split, initialisation and batches) goes to bench/results/budget_seeds.json under
`CASE/EPOCHS/COLUMN/seedN`: the main table stays one seed per cell, and `--seeds` shows the cells run with several.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

from fastgr import RunFolder, TrainConfig, train_run
from fastgr.config import versions
from fastgr.files import write_text
from fastgr.presets import default_setting

CIFAR = dict(data=".data/cifar5k", arch="cifar_resnet20", lr=0.1, bs=128, wd=5e-4, augment="crop+flip", seed=0)
FINETUNE = dict(CIFAR, data=".data/ft59", weights=".data/src04_resnet20.pth", freeze_epochs=1)
CASES = {  # key: (row label, config)
    "digits40": ("digits, 40% symmetric", dict(data="digits")),
    # for the proposed default: what it costs where the labels are clean, and on class-dependent noise
    "digits_clean": ("digits, clean labels", dict(data="digits", noise=0.0)),
    "digits_pair30": ("digits, 30% pairflip", dict(data="digits", noise=0.3, noise_type="pairflip")),
    "cifar5k_sym40": ("CIFAR-5k, 40% symmetric", dict(CIFAR, noise=0.4, noise_type="symmetric")),
    "cifar5k_pair30": ("CIFAR-5k, 30% pairflip", dict(CIFAR, noise=0.3, noise_type="pairflip")),
    "c10n_random1": ("CIFAR-10N random_label1 (17.5% wrong) on CIFAR-5k", dict(CIFAR, labels=".data/c10n_random1.csv")),
    "c10n_aggre": ("CIFAR-10N aggre_label (9.2% wrong) on CIFAR-5k", dict(CIFAR, labels=".data/c10n_aggre.csv")),
    "cifar5k_clean": ("CIFAR-5k, clean labels", dict(CIFAR, noise=0.0)),
    # fine-tuning (`--weights`, fastai's fine_tune: 1 epoch of the head, then EPOCHS of everything): a ResNet-20
    # pretrained on CIFAR-10's classes 0-4 (bench/finetune_source.py) on 1,000 images of each of classes 5-9
    "ft_clean": ("fine-tune, clean labels", dict(FINETUNE, noise=0.0)),
    "ft_sym40": ("fine-tune, 40% symmetric", dict(FINETUNE, noise=0.4, noise_type="symmetric")),
    "ft_pair30": ("fine-tune, 30% pairflip", dict(FINETUNE, noise=0.3, noise_type="pairflip")),
}
COLUMNS = {  # key: (column label, the flags that differ from the case's)
    "ce": ("CE", dict(loss="ce")),
    "ls": ("LS", dict(loss="ls")),  # fastai's LabelSmoothingCrossEntropyFlat, eps 0.1
    "gce": ("GCE", dict(loss="gce")),  # q = 0.7
    "sce": ("SCE", dict(loss="sce")),  # alpha 0.1, beta 1 (Wang et al. 2019's CIFAR-10 setting)
    "mixup": ("MixUp", dict(loss="ce", mixup=0.4)),  # fastai's MixUp at its default alpha
    # GR as `fastgr train` runs it with no setting given: `default_setting` of the budget. In the table, the cell of
    # whichever column trained that setting (`default_cell`)
    "default": ("GR defaults", dict()),
    "gr": ("GR 0.5/8", dict(lam=0.5, beta=8.0)),  # the paper's fixed default, by hand (no warm-up)
    # the paper's CIFAR-10 r = 0.4 row with fastgr's warm-up, by hand: the default from LONG_BUDGET_EPOCHS epochs
    "gr116": ("GR 1/16/0.5", dict(lam=1.0, beta=16.0, warmup=0.5)),
    "preset": ("GR --preset", dict(preset=True)),
    "tune": ("GR --tune", dict(tune=True)),
    # the automatic setting (`--auto`, fastgr.handover): which setting from when, by the run and its schedule
    "auto": ("GR --auto", dict(auto=True)),
}
# the noise signals (fastgr.signals) too: the evidence the automatic setting decides on
CURVES = ("test_acc", "train_acc_given", "train_acc_true", "noise_cl", "noise_aum", "memorised", "confidence",
          "gr_share")
OUT = Path("bench/results/budget_sweep.json")
SEEDS_OUT = Path("bench/results/budget_seeds.json")  # the runs with a seed other than the protocol's 0


def train_kept(cfg: TrainConfig, out: Path, keep: bool = True) -> dict:
    """`train_run` into `out`, going on with an interrupted run found there when `keep` (`RunFolder.interrupted`:
    not only one with a checkpoint, since a `--tune` run cut while tuning has only its finished candidates, hours
    of a 120-epoch grid that starting over would throw away)."""
    resume = keep and RunFolder(out).interrupted
    return train_run(cfg, out, overwrite=not resume, resume=resume)


def row_key(case: str, epochs: int, column: str, seed: int = 0) -> str:
    "A cell's key in the results: `CASE/EPOCHS/COLUMN`, with `/seedN` for a seed other than the protocol's 0."
    return f"{case}/{epochs}/{column}" + (f"/seed{seed}" if seed else "")


def run_one(case: str, epochs: int | None, column: str, root: Path, keep: bool, seed: int = 0) -> dict:
    """Train one cell (resuming a kept, interrupted one; reading a kept, finished one) and return its summary with
    per-epoch curves."""
    flags = {**CASES[case][1], **COLUMNS[column][1], "seed": seed}
    if epochs is not None:
        flags["epochs"] = epochs
    cfg = TrainConfig(**flags)
    out = (root / f"seed{seed}" if seed else root) / case / str(cfg.epochs) / column
    t0 = time.perf_counter()
    if keep and (out / "summary.json").exists():
        s = {**json.loads((out / "summary.json").read_text()), "wall_seconds": None}
    else:
        s = train_kept(cfg, out, keep)
        s["wall_seconds"] = time.perf_counter() - t0
    s["seconds"] = RunFolder(out).training_seconds()
    s["epochs"] = cfg.epochs
    s["seed"] = cfg.seed
    s["flags"] = {k: v for k, v in flags.items() if (k not in CIFAR or k == "data") and k != "seed"}
    config = json.loads((out / "config.json").read_text())
    s["device"] = config["resolved"]["device"]  # a GPU's row says so
    s["cpu"] = config["versions"].get("cpu")  # seeded CPU runs agree to the digit only on one kind of CPU
    m = pd.read_csv(out / "metrics.csv")
    s["curves"] = {c: [None if pd.isna(v) else round(float(v), 4) for v in m[c]] for c in CURVES if c in m}
    s.update(held_out_counts(out, cfg, s["test_accuracy_final"], s["device"]))
    return s


def held_out_counts(out: Path, cfg: TrainConfig, accuracy: float, device: str) -> dict:
    """A finished run's test-set confusion counts (true class x predicted class, from its exported learner) and its
    training labels' transition counts (true x given): with them bench/tune_agreement.py --rule scores every column
    by the accuracy noisy test labels would give it, without training again."""
    from fastgr.data import load_data
    from fastgr.noise import load_labels
    from fastgr.prediction import predict_with_learner

    data = load_data(cfg.data, cfg.img_size, cfg.valid_pct, cfg.seed, cfg.classes, cfg.in_memory)
    pred = predict_with_learner(out, data, device, x=data.valid_x).argmax(1).numpy()  # where it trained
    c, y = data.n_classes, data.valid_y.numpy()
    # the exported learner should be the model the summary scored; on a GPU (bf16) a few predictions may differ,
    # which is said, not fatal: the rule's clean accuracy is the confusion's own
    if abs((pred == y).mean() - accuracy) > 1e-6:
        print(f"note: {out}: the exported learner scores {(pred == y).mean():.4f} here, the summary {accuracy:.4f}")
    noisy, _, _ = load_labels(out / "labels.csv", data.classes)
    return {"test_confusion": np.bincount(y * c + pred, minlength=c * c).reshape(c, c).tolist(),
            "label_transition": np.bincount(noisy.true * c + noisy.given, minlength=c * c).reshape(c, c).tolist()}


def merge(out: Path, new: dict) -> dict:
    """Add `new`'s rows to the results file `out`, read again just before writing (another process may have added
    rows since), and write it whole by a rename; the merged results."""
    results = json.loads(out.read_text()) if out.exists() else {"meta": {}, "rows": {}}
    for key, row in new["rows"].items():  # a CPU cell and a GPU (bf16) one are different measurements: keep both
        old = results["rows"].get(key)
        if old is not None and old.get("device", "cpu").split(":")[0] != row.get("device", "cpu").split(":")[0]:
            raise SystemExit(f"{out} has {key} from {old.get('device', 'cpu')}, not {row.get('device')}: merge into "
                             "another file (--out)")
    results["meta"] = new.get("meta") or results["meta"]
    results["rows"].update(new["rows"])
    write_text(out, json.dumps(results, indent=1) + "\n")
    return results


def cell(r: dict | None) -> str:
    "Final test accuracy (best epoch in brackets)."
    return "-" if r is None else f"{r['test_accuracy_final']:.3f} ({r['test_accuracy_best']:.3f})"


def default_cell(rows: dict, row: str) -> dict | None:
    "The cell of GR's defaults in a row (`CASE/EPOCHS`): the run of any GR column that trained `default_setting`."
    case, epochs = row.split("/")
    s = default_setting(TrainConfig(**{**CASES[case][1], "epochs": int(epochs)}).total_epochs)  # a fine-tune's head too
    for col in ("default", "gr", "gr116", "preset", "tune"):
        r = rows.get(f"{row}/{col}")
        if r is not None and (r.get("lam"), r.get("beta"), r.get("warmup")) == (s.lam, s.beta, s.warmup):
            return r
    return None


def table(rows: dict) -> str:
    "The results table: one row per case and budget, one column per method."
    lines = ["| case | epochs | " + " | ".join(c[0] for c in COLUMNS.values()) + " |",
             "|---|---|" + "---|" * len(COLUMNS)]
    keys = sorted({k.rsplit("/", 1)[0] for k in rows}, key=lambda k: (list(CASES).index(k.split("/")[0]),
                                                                    int(k.split("/")[1])))
    for ce in keys:
        case, epochs = ce.split("/")
        gpu = any(rows.get(f"{ce}/{c}", {}).get("device", "cpu").startswith("cuda") for c in COLUMNS)
        lines.append(f"| {CASES[case][0]}{' (GPU, bf16)' if gpu else ''} | {epochs} | " +
                     " | ".join(cell(default_cell(rows, ce) if c == "default" else rows.get(f"{ce}/{c}"))
                                for c in COLUMNS) + " |")
    return "\n".join(lines)


def _fmt(v: float | None, column: str) -> str:
    "An accuracy, or a gain over CE (a `-ce` column) with its sign."
    return "-" if v is None else f"{v:+.3f}" if column.endswith("-ce") else f"{v:.3f}"


def _stat(values: list[float | None], column: str) -> str:
    "Mean +- sample sd of the seeds run (how many in brackets); '-' for fewer than two."
    v = np.array([x for x in values if x is not None])
    return f"{_fmt(v.mean(), column)} +- {v.std(ddof=1):.3f} ({len(v)})" if len(v) > 1 else "-"


def seeds_table(rows: dict, seeded: dict) -> str:
    """Final test accuracy of each cell run with more than one seed: one line per seed (seed 0 from the main results,
    `rows`; the others from `seeded`), each column's gain over CE on the same seed (the same noise draw and split),
    and the mean +- sample standard deviation over the seeds each has run (how many in brackets)."""
    cells = sorted({k.rsplit("/", 2)[0] for k in seeded}, key=lambda k: (list(CASES).index(k.split("/")[0]),
                                                                        int(k.split("/")[1])))
    cols = [c for c in COLUMNS if any(k.split("/")[2] == c for k in seeded)]  # any seeded in any row: one header
    gains = [c for c in cols if c != "ce"] if "ce" in cols else []
    names = [COLUMNS[c][0] for c in cols] + [f"{COLUMNS[c][0]} - CE" for c in gains]
    lines = ["| case | epochs | seed | " + " | ".join(names) + " |", "|---|---|---|" + "---|" * len(names)]
    for ce in cells:
        seeds = sorted({0} | {int(k.rsplit("seed", 1)[1]) for k in seeded if k.startswith(ce + "/")})
        acc = {}
        for seed in seeds:
            for c in cols:
                if seed:
                    r = seeded.get(f"{ce}/{c}/seed{seed}")
                else:  # seed 0 only where this row runs the column with other seeds: not a mix of run sets
                    seeded_here = any(k.startswith(f"{ce}/{c}/seed") for k in seeded)
                    r = (default_cell(rows, ce) if c == "default" else rows.get(f"{ce}/{c}")) if seeded_here else None
                acc[seed, c] = None if r is None else r["test_accuracy_final"]
        for seed in seeds:
            for c in gains:
                acc[seed, f"{c}-ce"] = (None if acc[seed, c] is None or acc[seed, "ce"] is None
                                        else acc[seed, c] - acc[seed, "ce"])
        shown = cols + [f"{c}-ce" for c in gains]
        name, epochs = CASES[ce.split("/")[0]][0], ce.split("/")[1]
        lines += [f"| {name} | {epochs} | {seed} | " + " | ".join(_fmt(acc[seed, c], c) for c in shown) + " |"
                  for seed in seeds]
        lines.append(f"| {name} | {epochs} | mean +- sd | " +
                     " | ".join(_stat([acc[s, c] for s in seeds], c) for c in shown) + " |")
    return "\n".join(lines)


def results_table(rows: dict, main: Path = OUT) -> str:
    """The table of a results file's rows: `table`, or where they hold other seeds' runs (`CASE/EPOCHS/COLUMN/seedN`:
    budget_seeds.json, or a file they were merged into) `seeds_table`, seed 0 from `main` and the rows' own."""
    seeded = {k: v for k, v in rows.items() if k.count("/") == 3}
    if not seeded:
        return table(rows)
    first = json.loads(main.read_text())["rows"] if main.exists() else {}
    return seeds_table({**first, **{k: v for k, v in rows.items() if k not in seeded}}, seeded)


def figure(rows: dict, path: Path, cases: tuple[str, ...] = ("cifar5k_sym40", "c10n_random1")) -> None:
    "Per-epoch test accuracy (solid) and fit of the given labels (dashed), one panel per CIFAR case and budget."
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = sorted({(c, int(k.split("/")[1])) for k in rows for c in cases if k.startswith(c + "/")},
                    key=lambda cb: (cases.index(cb[0]), cb[1]))
    ncols = min(3, len(panels))  # rows of three: readable on a page
    nrows = -(-len(panels) // ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(5.2 * ncols, 4 * nrows), squeeze=False, sharey=True)
    for ax in axes.flat[len(panels):]:
        ax.set_visible(False)
    for ax, (case, b) in zip(axes.flat, panels):
        for i, (col, (label, _)) in enumerate(COLUMNS.items()):
            r = rows.get(f"{case}/{b}/{col}")
            if r is None:
                continue
            x = range(1, len(r["curves"]["test_acc"]) + 1)
            line, = ax.plot(x, r["curves"]["test_acc"], label=label, color=f"C{i}")
            ax.plot(x, r["curves"]["train_acc_given"], "--", color=line.get_color(), alpha=0.6)
        ax.set(title=f"{CASES[case][0]}, {b} epochs", xlabel="epoch", ylim=(0, 1))
        ax.title.set_fontsize(9)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8, loc="lower right")
    for row in axes:
        row[0].set_ylabel("accuracy")
    fig.suptitle("solid: clean test accuracy; dashed: fit of the given (noisy) training labels", fontsize=9)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--case", choices=list(CASES), default="cifar5k_sym40")
    ap.add_argument("--epochs", type=int, nargs="+", default=[None], help="budgets; default: the case's")
    ap.add_argument("--columns", nargs="+", choices=list(COLUMNS), default=list(COLUMNS))
    ap.add_argument("--keep", type=Path, default=None, help="keep the run folders here (an interrupted run resumes)")
    ap.add_argument("--seed", type=int, default=0, help="seed of the noise draw, split, initialisation and batches; "
                    f"other than 0 the rows go to {SEEDS_OUT}")
    ap.add_argument("--out", type=Path, default=None, help=f"results file; default {OUT} ({SEEDS_OUT} with --seed)")
    ap.add_argument("--table", action="store_true", help="train nothing: print the results table")
    ap.add_argument("--figure", type=Path, default=None, help="train nothing: draw the per-epoch figure here")
    ap.add_argument("--seeds", action="store_true", help=f"train nothing: print the table of {SEEDS_OUT}")
    ap.add_argument("--merge", type=Path, nargs="+", default=None, help="train nothing: merge the rows of these "
                    "result files (other machines' --out) into --out")
    a = ap.parse_args()
    if a.seeds:
        print(seeds_table(*(json.loads(f.read_text())["rows"] if f.exists() else {} for f in (OUT, SEEDS_OUT))))
        return
    if a.seed < 0:
        raise SystemExit(f"--seed must be 0 or more, not {a.seed}")
    a.out = a.out or (SEEDS_OUT if a.seed else OUT)
    if a.merge:
        for f in a.merge:
            merge(a.out, json.loads(f.read_text()))
    results = json.loads(a.out.read_text()) if a.out.exists() else {"meta": {}, "rows": {}}
    if a.table or a.figure or a.merge:
        if a.figure:  # seed 0's curves: the other seeds' rows are not drawn
            figure({k: v for k, v in results["rows"].items() if k.count("/") == 2}, a.figure)
        print(results_table(results["rows"]))
        return
    data, weights = CASES[a.case][1].get("data"), CASES[a.case][1].get("weights")
    if data != "digits" and not Path(data, "train").is_dir():
        raise SystemExit(f"{data}/train missing: see this script's docstring")
    if weights and not Path(weights).is_file():
        raise SystemExit(f"{weights} missing: bench/finetune_source.py writes it")
    import torch

    meta = {"threads": torch.get_num_threads(), "cuda": torch.cuda.is_available(), "versions": versions(),
            "protocol": CIFAR}
    root = a.keep or Path(tempfile.mkdtemp())
    for epochs in a.epochs:
        for col in a.columns:
            s = run_one(a.case, epochs, col, root, a.keep is not None, a.seed)
            key = row_key(a.case, s["epochs"], col, a.seed)
            old = results["rows"].get(key, {})
            for k in ("wall_seconds", "cpu"):  # a kept run read again: what its first reading knew stays
                s[k] = old.get(k) if s[k] is None else s[k]
            results = merge(a.out, {"meta": meta, "rows": {key: s}})
            print(a.case, epochs, col, f"seed {a.seed}", cell(s), f"fit given {s['train_accuracy_given']:.3f}",
                  f"{s['seconds'] / 60:.1f} min", flush=True)
    print(results_table(results["rows"]))


if __name__ == "__main__":
    main()
