r"""Finding the wrong labels: fastgr's ranking from one run against cleanlab's standard recipe.

    uv run --group bench python bench/label_issues.py --case digits40 [--keep runs/issues]
    uv run --group bench python bench/label_issues.py --table      # the table of BENCHMARKS.md, train nothing

Per case (the data and noise of bench/budget_sweep.py's cases, its training protocol):
- fastgr: one `train_run` with GR's defaults (and one with cross-entropy, for fairness: the same callback records
  its dynamics); the ranking is label_issues.csv's `score` (AUM), the flagged set its `flagged` (AUM < 0);
- cleanlab 2.x: 5-fold cross-validated `pred_probs` of the same architecture trained with cross-entropy for the
  same epochs on each 4/5 (fastgr's learner, so the recipe is the same but for the loss);
  `cleanlab.filter.find_label_issues(labels, pred_probs)` flags, `cleanlab.rank.get_label_quality_scores` (self
  confidence) ranks, its flagged share is its noise-rate estimate.
Reported: AUROC of each ranking for the truly wrong labels, precision and recall of each flagged set, the estimate
of the noise rate against the truth, training cost in images processed. Results merge into
bench/results/label_issues.json under CASE.

A case is seven trainings (`PARTS`: gr, ce, fold0..fold4), each a file or folder of its own under --keep (a part
cut while training goes on from its last epoch), so that they can run one at a time over several sessions, or side
by side as processes sharing a GPU on a machine without cleanlab, and be scored later where cleanlab is installed:

    python bench/label_issues.py --case cifar5k_sym40 --keep DIR --part fold3     # train one part (no cleanlab)
    uv run --group bench python bench/label_issues.py --case cifar5k_sym40 --keep DIR --collect   # score them
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

from fastgr import TrainConfig, train_run
from fastgr.config import versions
from fastgr.files import write_text
from fastgr.issues import issue_auroc

sys.path.insert(0, str(Path(__file__).parent))
from budget_sweep import CASES, train_kept  # noqa: E402  (bench/ is not a package)

FOLDS = 5
PARTS = ("gr", "ce", *(f"fold{k}" for k in range(FOLDS)))
OUT = Path("bench/results/label_issues.json")


def _cases() -> dict:
    return {k: v for k, v in CASES.items() if k in ("digits40", "cifar5k_sym40", "cifar5k_pair30", "c10n_random1")}


def flagged_stats(flagged: np.ndarray, wrong: np.ndarray) -> dict:
    return {"estimated_noise_rate": float(flagged.mean()),
            "precision": float(wrong[flagged].mean()) if flagged.any() else None,
            "recall": float(flagged[wrong].mean()) if wrong.any() else None}


def fastgr_run(out: Path) -> dict:
    "fastgr's ranking and flagged set from a finished run's label_issues.csv."
    f = pd.read_csv(out / "label_issues.csv")
    wrong, flagged = f["is_wrong"].to_numpy(bool), f["flagged"].to_numpy(bool)
    s = json.loads((out / "summary.json").read_text())
    return {"auroc": issue_auroc(f["score"], wrong),
            "auroc_late_p": issue_auroc(1 - f["mean_p_late"].fillna(f["p_given_final"]), wrong),
            "auroc_final_p": issue_auroc(1 - f["p_given_final"], wrong), **flagged_stats(flagged, wrong),
            "true_noise_rate": float(wrong.mean()), "images_processed": len(pd.read_csv(out / "metrics.csv")) * len(f),
            "test_accuracy_final": s["test_accuracy_final"], "seconds": s["seconds"],
            "cpu": json.loads((out / "config.json").read_text())["versions"].get("cpu", "not recorded")}


def fold_of(n: int, seed: int) -> np.ndarray:
    "(n,) the cross-validation fold of every training example: a seeded permutation, dealt round."
    return np.random.default_rng(seed).permutation(n) % FOLDS


def cv_fold(cfg: TrainConfig, k: int, out: Path) -> None:
    """One fold of cleanlab's recipe: cross-entropy on the other four fifths for the same epochs, and the held-out
    fifth's predicted probabilities, written to `out` (.npz: held indices, probs, given and true labels, cost).
    While it trains, `out` without its suffix holds a checkpoint per epoch (`RunLog`'s): a fold cut at a session's
    end goes on from its last epoch, as a run does, and the folder goes once the .npz is written."""
    from fastai.torch_core import set_seed

    from fastgr.config import resolve_device
    from fastgr.data import load_data
    from fastgr.dataloaders import make_dataloaders
    from fastgr.learner import fit_schedule, gr_learner
    from fastgr.noise import training_labels
    from fastgr.runs import RunFolder
    from fastgr.training import RunLog

    data = load_data(cfg.data, cfg.img_size, cfg.valid_pct, cfg.seed, cfg.classes, cfg.in_memory)
    noisy = training_labels(data, cfg.noise_rate, cfg.noise_type, cfg.seed, cfg.labels)
    held = fold_of(len(noisy.given), cfg.seed) == k
    device = resolve_device(cfg.device)
    sub = data.holdout(held, noisy.given, f"{data.name} fold {k}")
    set_seed(cfg.seed + k)
    dls = make_dataloaders(sub, noisy.given[~held], cfg.bs, device, cfg.seed, cfg.augment or data.augment,
                           channels_last=device.type == "cuda")
    work = RunFolder(out.with_suffix(""))
    work.mkdir()
    log = RunLog(work)
    learn = gr_learner(dls, cfg.arch, loss="ce", lr=cfg.lr, wd=cfg.wd, amp=device.type == "cuda", cbs=[log])
    start = log.restore(learn)
    with learn.no_bar(), learn.no_logging():
        fit_schedule(learn, cfg.epochs, cfg.lr, start_epoch=start)
        t1 = time.perf_counter()  # training seconds are the log's, over every session; then the predictions'
        p, _ = learn.get_preds(dl=dls.valid)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.stem + ".part.npz")  # written whole, then renamed: a cut run leaves no half file
    np.savez(tmp, held=np.flatnonzero(held), probs=p.float().numpy(), given=noisy.given, true=noisy.true,
             images=cfg.epochs * int((~held).sum()), seconds=log.elapsed + time.perf_counter() - t1, device=str(device),
             cpu=versions()["cpu"])  # a seeded CPU run repeats only on its kind of CPU
    tmp.replace(out)
    shutil.rmtree(work.path)  # the fold's own working folder: its result is the .npz


def cleanlab_cv(folds: list[Path]) -> dict:
    "cleanlab's recipe on the folds' out-of-fold pred_probs: find_label_issues flags, self-confidence ranks."
    from cleanlab.filter import find_label_issues
    from cleanlab.rank import get_label_quality_scores

    parts = [np.load(f) for f in folds]
    given, true = parts[0]["given"], parts[0]["true"]
    probs = np.zeros((len(given), parts[0]["probs"].shape[1]))
    for part in parts:
        probs[part["held"]] = part["probs"]
    flagged = find_label_issues(given, probs)
    quality = get_label_quality_scores(given, probs)
    wrong = given != true
    return {"auroc": issue_auroc(1 - quality, wrong), **flagged_stats(flagged, wrong),
            "true_noise_rate": float(wrong.mean()), "images_processed": int(sum(int(q["images"]) for q in parts)),
            "seconds": round(sum(float(q["seconds"]) for q in parts), 2), "device": str(parts[0]["device"]),
            "cpu": sorted({str(q["cpu"]) if "cpu" in q else "not recorded" for q in parts})}


def train_part(cfg: TrainConfig, root: Path, part: str) -> None:
    "Train one of a case's `PARTS` into `root` (the case's folder), unless it is there already."
    if part in ("gr", "ce"):
        out = root / part
        if not (out / "summary.json").exists():
            train_kept(cfg if part == "gr" else cfg.replace(loss="ce"), out)
    elif not (root / f"{part}.npz").exists():
        cv_fold(cfg, int(part.removeprefix("fold")), root / f"{part}.npz")


def correction(cfg: TrainConfig, run: Path) -> dict:
    """Table 9's correction of a finished GR run by two rules, each retrained from scratch with the same settings:
    the paper's (relabel where the final model disagrees: what `train --correct` does) and the flagged set of
    label_issues.csv (AUM < 0, to the suggested label)."""
    from fastgr.correction import correction_report, relabel
    from fastgr.data import load_data
    from fastgr.noise import NoisyLabels, save_labels
    from fastgr.prediction import predict_with_learner

    lab = pd.read_csv(run / "labels.csv")
    iss = pd.read_csv(run / "label_issues.csv").sort_values("index")
    data = load_data(cfg.data, cfg.img_size, cfg.valid_pct, cfg.seed, cfg.classes, cfg.in_memory)
    given = np.array([data.classes.index(str(c)) for c in lab["given_label"]])
    true = np.array([data.classes.index(str(c)) for c in lab["true_label"]])
    probs = predict_with_learner(run / "learner.pkl", data, "cpu")
    suggested = np.array([data.classes.index(str(c)) for c in iss["suggested_label"]])
    rules = {"model_disagrees": relabel(probs, given, 0.0),
             "aum_flagged": np.where(iss["flagged"].to_numpy(bool), suggested, given)}
    out = {}
    for name, labels in rules.items():
        rep = correction_report(given, labels, true, probs.argmax(1).numpy())
        path = run.parent / f"labels_{name}.csv"
        save_labels(path, NoisyLabels(labels, true, "corrected", cfg.noise_rate, cfg.seed), data.classes,
                    data.train_items)
        s = train_run(cfg.replace(labels=str(path), noise=None), run.parent / f"retrain_{name}", overwrite=True)
        out[name] = {**{k: rep[k] for k in ("relabelled_fraction", "correction_precision", "correction_recall",
                                             "noise_rate_after")},
                     "test_accuracy_after": s["test_accuracy_final"],
                     "test_accuracy_best_after": s["test_accuracy_best"]}
        print(name, out[name], flush=True)
    return out


def table(results: dict) -> str:
    lines = ["| case | method | AUROC | flagged precision | recall | noise estimate (truth) | images processed |",
             "|---|---|---|---|---|---|---|"]
    for case, r in results.items():
        if case == "meta":
            continue
        for name, label in (("fastgr_gr", "fastgr, one GR run"), ("fastgr_ce", "fastgr, one CE run"),
                            ("cleanlab", f"cleanlab, {FOLDS}-fold CE")):
            m = r.get(name)
            if m is None:
                continue
            fmt = lambda v: "-" if v is None else f"{v:.3f}"  # noqa: E731
            lines.append(f"| {case} | {label} | {fmt(m['auroc'])} | {fmt(m['precision'])} | {fmt(m['recall'])} | "
                         f"{m['estimated_noise_rate']:.3f} ({m['true_noise_rate']:.3f}) | "
                         f"{m['images_processed']:,} |")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--case", choices=sorted(_cases()), default="digits40")
    ap.add_argument("--keep", type=Path, default=None, help="keep the fastgr runs here (reused if finished)")
    ap.add_argument("--table", action="store_true", help="print the results table and train nothing")
    ap.add_argument("--correction", action="store_true", help="compare two correction rules on the kept GR run "
                    "(needs --keep and a finished case)")
    ap.add_argument("--epochs", type=int, default=None, help="training budget of every part; default: the case's")
    ap.add_argument("--part", choices=PARTS, default=None, help="train this part only, into --keep (no cleanlab)")
    ap.add_argument("--collect", action="store_true", help="train nothing: score the parts found under --keep")
    a = ap.parse_args()
    results = json.loads(OUT.read_text()) if OUT.exists() else {}
    if a.table:
        print(table(results))
        return
    flags = dict(_cases()[a.case][1])
    if a.epochs is not None:
        flags["epochs"] = a.epochs
    cfg = TrainConfig(**flags)
    if (a.part or a.collect or a.correction) and a.keep is None:
        raise SystemExit("--part, --collect and --correction need --keep DIR")
    root = (a.keep or Path(tempfile.mkdtemp(prefix="label_issues_"))) / a.case
    if a.correction:
        results[a.case]["correction"] = correction(cfg, root / "gr")
        write_text(OUT, json.dumps(results, indent=1) + "\n")
        return
    if a.part:
        train_part(cfg, root, a.part)
        return
    if not a.collect:
        for part in PARTS:
            train_part(cfg, root, part)
    missing = [p for p in PARTS if not (root / p / "summary.json").exists() and not (root / f"{p}.npz").exists()]
    if missing:
        raise SystemExit(f"{root}: parts not trained yet: {', '.join(missing)}")
    r = {"fastgr_gr": fastgr_run(root / "gr"), "fastgr_ce": fastgr_run(root / "ce"),
         "cleanlab": cleanlab_cv([root / f"fold{k}.npz" for k in range(FOLDS)]), "epochs": cfg.epochs}
    results["meta"] = {"versions": versions(), "folds": FOLDS}
    results[a.case] = r
    write_text(OUT, json.dumps(results, indent=1) + "\n")
    print(table({a.case: r}))


if __name__ == "__main__":
    main()
