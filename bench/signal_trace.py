r"""Every training example's prediction at every epoch of budget_sweep cells, kept to study handover rules offline.

    uv run python bench/signal_trace.py --case cifar5k_sym40 --epochs 120 --columns ce --keep runs/sweep

Runs `bench/budget_sweep.py` with the same arguments (its results merge into bench/results/budget_sweep.json as
usual, or with `--results FILE` into that file: bench/results/signal_trace_reruns.json holds cells of the main file
re-run on this CPU with the signals) and a callback added to each run's learner that writes, at the end of each
training epoch, the last prediction of every training example during that epoch (dataset index order: predicted
class, its probability, the probability of the given label; -1 / NaN where unseen) to `RUN/trace/epoch_NNN.npz`.
The traces are what docs/design.md's "The automatic setting" reads the candidate rules on; they stay in the run
folders (not results).
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import torch
from fastai.callback.core import Callback

sys.path.insert(0, str(Path(__file__).parent))
import budget_sweep  # noqa: E402

import fastgr.training as training  # noqa: E402
from fastgr.schedule import fit_epoch  # noqa: E402
from fastgr.telemetry import batch_indices, is_fitting  # noqa: E402


class Trace(Callback):
    order = 45
    run_valid = False

    def __init__(self, n: int, folder: Path):
        self.n, self.folder = n, folder

    def before_epoch(self):
        self.pred = torch.full((self.n,), -1, dtype=torch.long)
        self.p_pred = torch.full((self.n,), float("nan"))
        self.p_given = torch.full((self.n,), float("nan"))

    def after_loss(self):
        if not self.training or not is_fitting(self.learn):
            return
        z, y = self.learn.pred.detach().float().cpu(), self.learn.yb[0].reshape(-1).cpu()
        idx = batch_indices(self.learn.dl, self.learn.iter, len(y)).cpu()
        ok = idx >= 0
        probs = torch.softmax(z, 1)
        p, c = probs.max(1)
        self.pred[idx[ok]], self.p_pred[idx[ok]] = c[ok], p[ok]
        self.p_given[idx[ok]] = probs.gather(1, y[:, None])[:, 0][ok]

    def after_train(self):
        self.folder.mkdir(parents=True, exist_ok=True)
        np.savez(self.folder / f"epoch_{fit_epoch(self.learn) + 1:03d}.npz", pred=self.pred.numpy(),
                 p_pred=self.p_pred.numpy(), p_given=self.p_given.numpy())


def main() -> None:
    made = training.gr_learner

    def gr_learner(dls, *args, cbs=None, **kwargs):
        log = next(cb for cb in cbs if isinstance(cb, training.RunLog))
        folder = Path(log.folder.path) / "trace"
        return made(dls, *args, cbs=[*cbs, Trace(len(dls.train.dataset), folder)], **kwargs)

    training.gr_learner = gr_learner
    if "--results" in sys.argv:  # a cell measured before on another CPU is re-run into a file of its own
        i = sys.argv.index("--results")
        budget_sweep.OUT = Path(sys.argv[i + 1])
        del sys.argv[i : i + 2]
    budget_sweep.main()


if __name__ == "__main__":
    main()
