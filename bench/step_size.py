r"""Is GR's gain or loss its step size? A probe, not a fastgr setting.

    uv run python bench/step_size.py --case cifar5k_sym40 --epochs 10 --keep runs/probe_mass
    uv run python bench/step_size.py --case ft_sym40 --epochs 5 --keep runs/probe_mass     # and ft_clean

GR's gradient into the logits has an L1 mass of 1 a batch (weights normalised over the batch, unit directions);
cross-entropy's mean gradient has 2 mean(1 - p_i), about 1.8 for a network that has learned nothing of 10 classes
and less than 1 once it fits most labels. So GR trains a weak network with smaller steps than CE and a fitted one
with larger ones, and a gain or loss of GR against CE at the same learning rate could be the step and not the
emphasis. This trains one budget_sweep cell (`GR 0.5/8`, the short-budget default) with GR's gradient rescaled, on
the device and at every step, to cross-entropy's L1 mass for the same batch (`mass` below): GR's emphasis at CE's
step size. Results, beside the cell's CE and GR figures from bench/results/budget_sweep.json, merge into
bench/results/step_size.json.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
import budget_sweep  # noqa: E402

import fastgr.callback as callback  # noqa: E402
from fastgr.files import write_text  # noqa: E402
from fastgr.gradient import GRTerms  # noqa: E402

OUT = Path("bench/results/step_size.json")
_gr_terms = callback.gr_terms


def ce_mass_terms(logits, targets, *args, **kwargs) -> GRTerms:
    "GR's terms with the gradient scaled to cross-entropy's L1 mass over the batch (no host read)."
    t = _gr_terms(logits, targets, *args, **kwargs)
    g = t.gradient.float()
    scale = 2 * (1 - t.p).sum() / t.p.numel() / g.abs().sum().clamp_min(1e-12)
    return GRTerms((g * scale).to(t.gradient.dtype), t.weight, t.p)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--case", choices=list(budget_sweep.CASES), required=True)
    ap.add_argument("--epochs", type=int, required=True)
    ap.add_argument("--keep", type=Path, default=Path("runs/probe_mass"), help="run folders (ROOT/mass/CASE/...)")
    a = ap.parse_args()
    callback.gr_terms = ce_mass_terms  # what GRCallback calls at every training step
    s = budget_sweep.run_one(a.case, a.epochs, "gr", a.keep / "mass", keep=True)
    rows = json.loads(Path("bench/results/budget_sweep.json").read_text())["rows"]
    ref = {c: rows.get(f"{a.case}/{a.epochs}/{c}", {}).get("test_accuracy_final") for c in ("ce", "gr")}
    results = json.loads(OUT.read_text()) if OUT.exists() else {"note": __doc__.split("\n\n")[2].replace("\n", " "),
                                                                "rows": {}}
    results["rows"][f"{a.case}/{a.epochs}"] = {
        "gr_at_ce_mass": {k: s.get(k) for k in ("test_accuracy_final", "test_accuracy_best", "train_accuracy_given",
                                                "train_accuracy_true", "cpu")},
        "curve": s["curves"]["test_acc"], "ce": ref["ce"], "gr": ref["gr"]}
    write_text(OUT, json.dumps(results, indent=1) + "\n")
    print(f"{a.case} {a.epochs}: GR at CE's step size {s['test_accuracy_final']:.3f}, GR {ref['gr']}, CE {ref['ce']}")


if __name__ == "__main__":
    main()
