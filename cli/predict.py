"""`fastgr predict`: a finished run's model on new images, as a table and a CSV."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.table import Table

from .base import command, console, err_console, new_file

SHOWN = 30  # rows of the terminal table; the CSV has them all


@command(epilog="Example: fastgr predict runs/photos-gr new_photos/ extra.jpg --top-k 3   (writes "
                "runs/photos-gr/predictions.csv)")
def predict(
    run_dir: Path = typer.Argument(..., help="A finished `fastgr train` run folder (it holds learner.pkl)."),
    images: list[Path] = typer.Argument(..., help="Image files, or folders searched for images.",
                                        show_default=False),
    top_k: int = typer.Option(3, "--top-k", "-k", min=1, help="Classes per image, most probable first."),
    out: Path = typer.Option(None, "--out", metavar="FILE", show_default=False,
                             help="The predictions as a CSV. \\[default: RUN_DIR/predictions.csv]"),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an existing --out file."),
    device: str = typer.Option(None, "--device", help="cpu, cuda, cuda:1... \\[default: cuda when available]",
                               show_default=False),
):
    """Predict the classes of new images with a run's trained model (trained on a GPU or not)."""
    from fastgr.files import atomic_path
    from fastgr.prediction import predict_images

    out = run_dir / "predictions.csv" if out is None else out  # beside the model, wherever the user stands
    new_file(out, overwrite)  # checked before anything is read or predicted
    table = predict_images(run_dir, images, top_k, device)
    with atomic_path(out) as tmp:
        table.to_csv(tmp, index=False, float_format="%.6g")
    k = sum(c.startswith("class_") for c in table.columns)
    view = Table(title=f"top-{k} classes of {len(table)} image(s)", title_justify="left")
    view.add_column("image", overflow="fold")
    for j in range(1, k + 1):
        view.add_column(f"#{j}")
    for _, row in table.head(SHOWN).iterrows():
        view.add_row(row["item"], *(f"{row[f'class_{j}']} {row[f'prob_{j}']:.3f}" for j in range(1, k + 1)))
    console.print(view)
    if len(table) > SHOWN:
        console.print(f"... {len(table) - SHOWN} more in the CSV")
    skipped = table.attrs.get("skipped", [])
    if skipped:
        from rich.markup import escape

        err_console.print(f"[yellow]skipped {len(skipped)} unreadable file(s), e.g. {escape(skipped[0][0])} "
                          f"({escape(skipped[0][1])})[/]", soft_wrap=True)
    console.print(f"wrote {out}")
