"""`fastgr issues`: the training labels most likely wrong, from one run."""

from __future__ import annotations

from pathlib import Path

import typer

from .base import command, console
from .render import summary_table


@command(epilog="Example: fastgr issues runs/digits-gr --top 30\n\n"
                "Every example is in RUN_DIR/label_issues.csv, most suspect first.")
def issues(
    run_dir: Path = typer.Argument(..., help="A finished `fastgr train` run folder."),
    top: int = typer.Option(24, "--top", min=1, help="Suspects to show in the table and the contact sheet."),
    sheet: bool = typer.Option(True, "--sheet/--no-sheet", help="Write label_issues.png, a contact sheet of the "
                               "top suspects, into the run folder."),
):
    """Rank the training labels by how likely they are wrong (area under the margin over training)."""
    from rich.table import Table

    from fastgr.issues import issue_summary, label_issues

    frame = label_issues(run_dir)
    known = "is_wrong" in frame
    head = frame.head(top)
    table = Table(title=f"top {len(head)} of {len(frame)} training labels, most likely wrong first",
                  title_justify="left")
    for col in ("#", "item", "given", "suggested", "score", "flagged") + (("truly wrong",) if known else ()):
        table.add_column(col, justify="right" if col in ("#", "score") else "left")
    for i, r in enumerate(head.itertuples(), 1):
        row = [str(i), str(r.item), str(r.given_label), str(r.suggested_label), f"{r.score:.3f}",
               "yes" if r.flagged else ""]
        if known:
            row.append("yes" if r.is_wrong else "no")
        table.add_row(*row)
    console.print(table)
    summary = issue_summary(frame)
    console.print(summary_table(summary, "label issues"))
    if not known:
        console.print("precision, recall and AUROC are unknown: the true labels of this data are not known")
    if sheet and len(head):
        from fastgr.issues import suspect_images
        from fastgr.plots import plot_label_issues
        from fastgr.runs import RunFolder

        images = suspect_images(run_dir, head["index"].tolist(), head["item"].tolist())
        titles = [f"{g} -> {s}  {sc:.2f}" for g, s, sc in
                  zip(head["given_label"], head["suggested_label"], head["score"])]
        path = RunFolder(run_dir).save_figure("label_issues.png", plot_label_issues(images, titles))
        console.print(f"wrote {path}")
