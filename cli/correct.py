"""`fastgr correct`: relabel a training set with a trained run's model."""

from __future__ import annotations

from pathlib import Path

import typer

from .base import command, console
from .render import summary_table


@command(epilog="Example: fastgr correct runs/digits-gr --threshold 0.5\n\n"
                "Then: fastgr train digits --labels runs/digits-gr/labels_corrected.csv (retrain on them)")
def correct(
    run_dir: Path = typer.Argument(..., help="A finished `fastgr train` run folder."),
    data: str = typer.Argument(None, help="Data to relabel. \\[default: the run's own training data]",
                               show_default=False),
    threshold: float = typer.Option(0.0, "--threshold", min=0, max=1,
                                    help="Relabel only where the model is at least this confident."),
    out: Path = typer.Option(None, "--out", help="Corrected labels CSV. \\[default: RUN_DIR/labels_corrected.csv]"),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an existing --out file."),
    force: bool = typer.Option(False, "--force", help="Relabel with a run that has not learned anything."),
):
    """Relabel the training examples the run's model disagrees with; write the labels and a report."""
    from fastgr.experiment import correct_run

    report = correct_run(run_dir, data, threshold, out, overwrite, force)
    shown = {k: report[k] for k in ("n", "relabelled", "relabelled_fraction", "correction_precision",
                                    "correction_recall", "noise_rate_before", "noise_rate_after") if k in report}
    console.print(summary_table(shown, "label correction"))
    if not report["truth_known"]:
        console.print("precision and recall are unknown: the true labels of this data are not known")
    console.print(f"wrote {report['labels']} (given_label = corrected; original_label = what the run trained on)")
