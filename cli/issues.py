"""`fastgr issues`: the training labels most likely wrong, from one run."""

from __future__ import annotations

from pathlib import Path

import typer

from .base import command, console, fail
from .render import summary_table


@command(epilog="Example: fastgr issues runs/digits-gr --top 30\n\n"
                "Every example is in RUN_DIR/label_issues.csv, most suspect first.")
def issues(
    run_dir: Path = typer.Argument(..., help="A finished `fastgr train` run folder."),
    top: int = typer.Option(24, "--top", min=1, help="Suspects to show in the table and the contact sheet."),
    sheet: bool = typer.Option(True, "--sheet/--no-sheet", help="Write label_issues.png, a contact sheet of the "
                               "top suspects, into the run folder."),
    force: bool = typer.Option(False, "--force", help="Rank the labels of a run that has not learned anything."),
):
    """Rank the training labels by how likely they are wrong (area under the margin over training)."""
    from rich.markup import escape
    from rich.table import Table

    from fastgr.issues import clip_label, issue_summary, label_issues, not_learned

    frame = label_issues(run_dir)
    if (why := not_learned(run_dir)) and not force:
        fail(f"{why}; nothing ranked or flagged: train longer or check the data (--force shows the ranking anyway)")
    known = "is_wrong" in frame
    head = frame.head(top)
    table = Table(title=f"top {len(head)} of {len(frame)} training labels, most likely wrong first",
                  title_justify="left")
    for col in ("#", "item", "given", "suggested", "score", "flagged") + (("truly wrong",) if known else ()):
        table.add_column(col, justify="right" if col in ("#", "score") else "left")
    for i, r in enumerate(head.itertuples(), 1):
        row = [str(i), clip_label(r.item, 80), clip_label(r.given_label), clip_label(r.suggested_label),
               f"{r.score:.3f}", "yes" if r.flagged else ""]
        if known:
            row.append("yes" if r.is_wrong else "no")
        table.add_row(*row)
    console.print(table)
    summary = issue_summary(frame)
    console.print(summary_table(summary, "label issues"))
    if not known:
        console.print("precision, recall and AUROC are unknown: the true labels of this data are not known")
    if sheet and len(head):
        from fastgr.issues import item_files, suspect_images
        from fastgr.plots import plot_label_issues
        from fastgr.runs import RunFolder

        items = head["item"].tolist()
        files = item_files(run_dir, items)
        gone = [f for f in files or [] if not f.is_file()]
        if gone and len(gone) == len(items) and not gone[0].parent.exists():
            console.print(f"[yellow]the run's images are not where it found them ({escape(str(gone[0].parent))}: "
                          "moved?): the contact sheet's tiles are blank; --no-sheet leaves it out[/]", soft_wrap=True)
        elif gone:
            console.print(f"[yellow]{len(gone)} of the pictures' files are gone since training, e.g. "
                          f"{escape(str(gone[0]))}: blank tiles[/]", soft_wrap=True)
        images = suspect_images(run_dir, head["index"].tolist(), items)
        # each tile names its item, so that a picture can be found in label_issues.csv
        titles = [f"{clip_label(Path(str(it)).name, 18)}\n{clip_label(g, 12)} -> {clip_label(s, 12)}  {sc:.2f}"
                  for it, g, s, sc in zip(items, head["given_label"], head["suggested_label"], head["score"])]
        path = RunFolder(run_dir).save_figure("label_issues.png", plot_label_issues(images, titles))
        console.print(f"wrote {path}")
