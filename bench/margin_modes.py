r"""Do the margins of a cross-entropy run split in two where GR would help? Read on the traced runs.

    uv run python bench/margin_modes.py

A candidate for GR's no-knob default: key GR's share on how far apart the training examples' logit margins
split, epoch by epoch (apart where a competent network contradicts wrong labels; together on clean labels or a
weak network). Read offline on every run traced by bench/signal_trace.py (`RUN/trace/epoch_NNN.npz`: each
example's predicted class, its probability and the given label's): the margin is `log p_given - log p_pred`
where the prediction is another class (exactly the logit margin z_given - max z_other) and `log(p / (1 - p))` of
the given label where the prediction is the given label (a lower bound of it). A two-component Gaussian mixture
on each epoch's margins gives the low component's weight and Ashman's D (the distance between the two means over
their pooled standard deviation; two modes show from about D > 2). Results: bench/results/margin_modes.json, each
run's D and low weight by epoch beside its row's CE and GR 0.5/8 test accuracy from budget_sweep.json.

Beside them, each epoch's confidence: the mean probability of the predicted class, rescaled so that guessing
(1 / classes) is 0 and certainty is 1 (`confidence`): how competent the network is, read without any label.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from fastgr.files import write_text
from fastgr.runs import RunFolder

OUT = Path("bench/results/margin_modes.json")
ROOTS = (Path("runs/sweep"), Path("runs/sweep_x12"))


def margins(trace: Path) -> np.ndarray:
    "(N,) the margin proxy of every example seen in that epoch."
    z = np.load(trace)
    pg, pp = z["p_given"].astype(np.float64), z["p_pred"].astype(np.float64)
    seen = ~np.isnan(pg)
    pg, pp = np.clip(pg[seen], 1e-30, 1 - 1e-12), np.clip(pp[seen], 1e-30, 1.0)
    return np.where(pp > pg, np.log(pg) - np.log(pp), np.log(pg) - np.log1p(-pg))


def confidence(trace: Path, classes: int) -> float:
    "The epoch's mean probability of the predicted class, 0 for a uniform guess over `classes`, 1 for certainty."
    pp = np.load(trace)["p_pred"].astype(np.float64)
    return float((np.nanmean(pp) - 1 / classes) / (1 - 1 / classes))


def modes(m: np.ndarray) -> tuple[float, float]:
    "Ashman's D and the low component's weight of a two-component Gaussian mixture on `m`."
    from sklearn.mixture import GaussianMixture

    g = GaussianMixture(2, random_state=0, n_init=2).fit(m[:, None])
    mu, sd, w = g.means_[:, 0], np.sqrt(g.covariances_[:, 0, 0]), g.weights_
    lo = int(np.argmin(mu))
    return float(abs(mu[1] - mu[0]) / np.sqrt((sd[0] ** 2 + sd[1] ** 2) / 2)), float(w[lo])


def main() -> None:
    rows = json.loads(Path("bench/results/budget_sweep.json").read_text())["rows"]
    out = {"note": " ".join(__doc__.split("\n\n")[2:4]).replace("\n", " "), "runs": {}}
    for root in ROOTS:
        for run in sorted(p.parent for p in root.glob("*/*/*/trace")):
            case, epochs, column = run.relative_to(root).parts
            traces = sorted((run / "trace").glob("epoch_*.npz"))
            found = [modes(margins(t)) for t in traces]
            classes = len(RunFolder(run).read_record().data.classes)
            ref = {c: rows.get(f"{case}/{epochs}/{c}", {}).get("test_accuracy_final") for c in ("ce", "gr")}
            key = f"{root.name}:{case}/{epochs}/{column}"
            out["runs"][key] = {"ashman_d": [round(d, 2) for d, _ in found],
                                "low_weight": [round(w, 3) for _, w in found],
                                "confidence": [round(confidence(t, classes), 3) for t in traces], **ref}
            d = np.array([d for d, _ in found])
            print(f"{key}: D median {np.median(d):.2f} (range {d.min():.2f}-{d.max():.2f}) over {len(d)} epochs; "
                  f"CE {ref['ce']}, GR 0.5/8 {ref['gr']}", flush=True)
    write_text(OUT, json.dumps(out, indent=1) + "\n")


if __name__ == "__main__":
    main()
