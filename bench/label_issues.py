r"""Finding the wrong labels: fastgr's ranking from one run against cleanlab's standard recipe.

    uv run --group bench python bench/label_issues.py --case digits40 [--keep runs/issues]
    uv run --group bench python bench/label_issues.py --table      # the table of BENCHMARKS.md, train nothing

Per case (the data and noise of bench/budget_sweep.py's cases, its training protocol):
- fastgr: one `train_run` with GR's defaults (and one with cross-entropy, for fairness: the same callback records
  its dynamics); the ranking is label_issues.csv's `score` (AUM), the flagged set its `flagged` (`flag_cut`);
- cleanlab 2.x, three arms of 5-fold cross-validated `pred_probs` (`FOLD_ARMS`), each fold trained on 4/5 with
  fastgr's learner and the case's protocol: cross-entropy for the case's epochs (`fold`, the first comparison);
  cross-entropy for a fifth of them, so that the five folds cost one run (`eqfold`); GR's default for the case's
  epochs (`grfold`: cleanlab's scorer on GR-trained folds, which separates the trainer from the scoring rule).
  Each fold predicts its held-out fifth from its last epoch and from its epoch of best accuracy on that fifth's
  *given* labels (cleanlab's own CIFAR cross-validation keeps each fold's best checkpoint; no clean label is
  used): keys `cleanlab`, `cleanlab_equal`, `cleanlab_gr`, and the same with `_best`.
  `cleanlab.filter.find_label_issues(labels, pred_probs)` flags, `cleanlab.rank.get_label_quality_scores` (self
  confidence) ranks, its flagged share is its noise-rate estimate.
Reported: AUROC of each ranking for the truly wrong labels, precision and recall of each flagged set, the estimate
of the noise rate against the truth, training cost in images processed. Results merge into
bench/results/label_issues.json under CASE.

A case is 17 trainings (`PARTS`: gr, ce, and the five folds of each arm: fold0..4, eqfold0..4, grfold0..4), each a
file or folder of its own under --keep (a part cut while training goes on from its last epoch), so that they can
run one at a time over several sessions, or side by side as processes sharing a GPU on a machine without cleanlab,
and be scored later where cleanlab is installed (an arm is scored once its five folds are there; `--arms` trains
only some; images processed count training images, not the per-epoch predictions of the held-out fifth):

    python bench/label_issues.py --case cifar5k_sym40 --keep DIR --part fold3     # train one part (no cleanlab)
    uv run --group bench python bench/label_issues.py --case cifar5k_sym40 --keep DIR --collect   # score them
"""

from __future__ import annotations

import argparse
import copy
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
from fastai.callback.core import Callback

from fastgr import TrainConfig, train_run
from fastgr.config import versions
from fastgr.files import write_text
from fastgr.issues import issue_auroc
from fastgr.learner import unwrapped

sys.path.insert(0, str(Path(__file__).parent))
from budget_sweep import CASES, train_kept  # noqa: E402  (bench/ is not a package)

FOLDS = 5
# cleanlab's arms -> their key in the results (+ "_best": from each fold's best epoch): CE for the case's epochs, CE
# for a fifth of them (equal compute: the five folds add up to one run), GR's default for the case's epochs
FOLD_ARMS = {"fold": "cleanlab", "eqfold": "cleanlab_equal", "grfold": "cleanlab_gr"}
PARTS = ("gr", "ce", *(f"{arm}{k}" for arm in FOLD_ARMS for k in range(FOLDS)))  # a case's trainings
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


class BestHeldOut(Callback):
    """Keeps a copy of the model's weights at the epoch of best accuracy on the held-out fold's *given* labels (the
    fold's validation set), as cleanlab's CIFAR cross-validation keeps each fold's best checkpoint, without clean
    labels. Its state rides in `RunLog`'s checkpoint, so a fold cut and resumed picks the same epoch."""

    order = 60  # after the Recorder (50) has the epoch's accuracy; before RunLog (70) saves the checkpoint
    run_valid = False

    def __init__(self):
        self.acc, self.epoch, self.weights = -1.0, None, None

    def before_epoch(self):
        self.trained = False

    def before_train(self):
        self.trained = True  # fastai's SkipToEpoch cancels a resumed fit's skipped epochs before this

    def after_epoch(self):
        if not self.trained:
            return
        acc = next((m.value for m in self.learn.metrics if m.name == "test_acc"), None)  # this epoch's
        if acc is not None and float(acc) > self.acc:
            self.acc, self.epoch = float(acc), self.learn.epoch + 1
            self.weights = copy.deepcopy(unwrapped(self.learn.model).state_dict())

    def state_dict(self) -> dict:
        return {"acc": self.acc, "epoch": self.epoch, "weights": self.weights}

    def load_state_dict(self, state: dict) -> None:
        self.acc, self.epoch, self.weights = state["acc"], state["epoch"], state["weights"]


def cv_fold(cfg: TrainConfig, k: int, out: Path, arm: str = "fold") -> None:
    """One fold of a cleanlab arm (`FOLD_ARMS`): trained on the other four fifths, and the held-out fifth's
    predicted probabilities from the last epoch (`probs`) and from the epoch of best accuracy on the fold's given
    labels (`probs_best`, `best_epoch`), written to `out` (.npz: held indices, probs, given and true labels, cost).
    While it trains, `out` without its suffix holds a checkpoint per epoch (`RunLog`'s): a fold cut at a session's
    end goes on from its last epoch, as a run does, and the folder goes once the .npz is written."""
    from fastai.torch_core import set_seed

    from fastgr.config import resolve_device
    from fastgr.data import load_data
    from fastgr.dataloaders import make_dataloaders
    from fastgr.learner import fit_schedule, gr_learner
    from fastgr.noise import training_labels
    from fastgr.presets import default_setting
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
    log, best = RunLog(work), BestHeldOut()
    epochs = max(1, round(cfg.epochs / FOLDS)) if arm == "eqfold" else cfg.epochs
    setting = default_setting(epochs)  # what `fastgr train` gives GR with no setting, at this budget
    gr = dict(loss="gr", lam=setting.lam, beta=setting.beta, warmup=setting.warmup) if arm == "grfold" else \
        dict(loss="ce")
    learn = gr_learner(dls, cfg.arch, **gr, lr=cfg.lr, wd=cfg.wd, amp=device.type == "cuda", cbs=[log, best])
    start = log.restore(learn)
    with learn.no_bar(), learn.no_logging():
        fit_schedule(learn, epochs, cfg.lr, start_epoch=start)
        t1 = time.perf_counter()  # training seconds are the log's, over every session; then the predictions'
        p, _ = learn.get_preds(dl=dls.valid)
        unwrapped(learn.model).load_state_dict(best.weights)
        p_best, _ = learn.get_preds(dl=dls.valid)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.stem + ".part.npz")  # written whole, then renamed: a cut run leaves no half file
    np.savez(tmp, held=np.flatnonzero(held), probs=p.float().numpy(), probs_best=p_best.float().numpy(),
             best_epoch=best.epoch, given=noisy.given, true=noisy.true, images=epochs * int((~held).sum()),
             seconds=log.elapsed + time.perf_counter() - t1, device=str(device),
             cpu=versions()["cpu"])  # a seeded CPU run repeats only on its kind of CPU
    tmp.replace(out)
    shutil.rmtree(work.path)  # the fold's own working folder: its result is the .npz


def cleanlab_cv(folds: list[Path], which: str = "probs") -> dict:
    """cleanlab's recipe on the folds' out-of-fold pred_probs (`which`: the last epoch's, `probs`, or the best
    epoch's on the fold's given labels, `probs_best`): find_label_issues flags, self-confidence ranks."""
    from cleanlab.filter import find_label_issues
    from cleanlab.rank import get_label_quality_scores

    parts = [np.load(f) for f in folds]
    given, true = parts[0]["given"], parts[0]["true"]
    probs = np.zeros((len(given), parts[0]["probs"].shape[1]))
    for part in parts:
        probs[part["held"]] = part[which]
    flagged = find_label_issues(given, probs)
    quality = get_label_quality_scores(given, probs)
    wrong = given != true
    return {"auroc": issue_auroc(1 - quality, wrong), **flagged_stats(flagged, wrong),
            "true_noise_rate": float(wrong.mean()), "images_processed": int(sum(int(q["images"]) for q in parts)),
            "seconds": round(sum(float(q["seconds"]) for q in parts), 2), "device": str(parts[0]["device"]),
            "best_epochs": [int(q["best_epoch"]) for q in parts] if which == "probs_best" else None,
            "cpu": sorted({str(q["cpu"]) if "cpu" in q else "not recorded" for q in parts})}


def train_part(cfg: TrainConfig, root: Path, part: str) -> None:
    "Train one of a case's `PARTS` into `root` (the case's folder), unless it is there already."
    if part in ("gr", "ce"):
        out = root / part
        if not (out / "summary.json").exists():
            train_kept(cfg if part == "gr" else cfg.replace(loss="ce"), out)
    elif not (root / f"{part}.npz").exists():
        arm = part.rstrip("0123456789")
        cv_fold(cfg, int(part.removeprefix(arm)), root / f"{part}.npz", arm)


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


# the rankings a case's results hold -> how the tables name them
METHODS = {"fastgr_gr": "fastgr, one GR run", "fastgr_ce": "fastgr, one CE run",
           "cleanlab": f"cleanlab, {FOLDS}-fold CE, last epoch",
           "cleanlab_best": f"cleanlab, {FOLDS}-fold CE, best epoch on the fold's labels",
           "cleanlab_equal_best": f"cleanlab, {FOLDS}-fold CE at a fifth of the epochs (equal compute), best epoch",
           "cleanlab_gr_best": f"cleanlab's scorer, {FOLDS}-fold GR, best epoch"}


def summary(results: dict) -> str:
    """One table over the cases: each ranking's AUROC (the best of a case in bold; "-": not run there) and its
    training, in images processed, as a multiple of one GR run's."""
    cases = [c for c in _cases() if c in results]
    lines = ["| method | " + " | ".join(CASES[c][0] for c in cases) + " | training (one GR run = 1) |",
             "|---|" + "---|" * (len(cases) + 1)]
    best = {c: max(m["auroc"] for k, m in results[c].items() if k in METHODS) for c in cases}
    for name, label in METHODS.items():
        cells, cost = [], set()
        for c in cases:
            m = results[c].get(name)
            shown = "-" if m is None else f"{m['auroc']:.3f}"
            cells.append(f"**{shown}**" if m is not None and m["auroc"] == best[c] else shown)
            if m is not None:
                cost.add(f"{m['images_processed'] / results[c]['fastgr_gr']['images_processed']:g}")
        if cost:
            lines.append(f"| {label} | " + " | ".join(cells) + f" | {' / '.join(sorted(cost))} |")
    return "\n".join(lines)


def table(results: dict) -> str:
    lines = ["| case | method | AUROC | flagged precision | recall | noise estimate (truth) | images processed |",
             "|---|---|---|---|---|---|---|"]
    for case, r in results.items():
        if case == "meta":
            continue
        for name, label in METHODS.items():
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
    ap.add_argument("--arms", nargs="+", choices=list(FOLD_ARMS), default=list(FOLD_ARMS),
                    help="the cleanlab arms to train (default: all)")
    a = ap.parse_args()
    results = json.loads(OUT.read_text()) if OUT.exists() else {}
    if a.table:
        print(table(results) + "\n\n" + summary(results))
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
            if part in ("gr", "ce") or part.rstrip("0123456789") in a.arms:
                train_part(cfg, root, part)
    missing = [p for p in ("gr", "ce") if not (root / p / "summary.json").exists()]
    if missing:
        raise SystemExit(f"{root}: parts not trained yet: {', '.join(missing)}")
    r = {"fastgr_gr": fastgr_run(root / "gr"), "fastgr_ce": fastgr_run(root / "ce"), "epochs": cfg.epochs}
    for arm in FOLD_ARMS:  # an arm is scored once its five folds are trained (the rest stay as they were)
        folds = [root / f"{arm}{k}.npz" for k in range(FOLDS)]
        if all(f.exists() for f in folds):
            r[FOLD_ARMS[arm]] = cleanlab_cv(folds)
            if all("probs_best" in np.load(f) for f in folds):  # folds trained before the best epoch was kept lack it
                r[FOLD_ARMS[arm] + "_best"] = cleanlab_cv(folds, "probs_best")
    results["meta"] = {"versions": versions(), "folds": FOLDS}
    results[a.case] = {**results.get(a.case, {}), **r}
    write_text(OUT, json.dumps(results, indent=1) + "\n")
    print(table({a.case: r}))


if __name__ == "__main__":
    main()
