"""`fastgr noise`: draw one noisy labelling and save it with the true labels."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.table import Table

from .base import command, console, new_file
from .options import DATA_HELP, NoiseType, noise_rate


@command(epilog="Example: fastgr noise digits --rate 0.4 --type symmetric --seed 1 --out labels.csv\n\n"
                "Then: fastgr train digits --labels labels.csv (several runs can share one draw)")
def noise(
    data: str = typer.Argument(..., help=DATA_HELP),
    rate: float = typer.Option(..., "--rate", callback=noise_rate, help="Fraction of labels to corrupt, [0, 1)."),
    type: NoiseType = typer.Option(NoiseType.symmetric, "--type", help="How labels are corrupted."),
    seed: int = typer.Option(0, "--seed", help="Seed of the draw (and of a folder's train/held-out split)."),
    out: Path = typer.Option(..., "--out", help="The labels CSV to write (a .json of settings goes beside it)."),
    valid_pct: float = typer.Option(0.2, "--valid-pct", min=0, max=1, help="Held-out fraction, as in train."),
    classes: str = typer.Option(None, "--classes", help="Comma-separated class list of a folder or CSV."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an existing --out file."),
):
    """Draw a noisy labelling of DATA's training set and save it beside the true labels."""
    import numpy as np

    from fastgr.data import load_data
    from fastgr.noise import add_noise, save_labels

    new_file(out, overwrite)
    new_file(out.with_name(out.name + ".json"), overwrite)
    d = load_data(data, None, valid_pct, seed, [c.strip() for c in classes.split(",")] if classes else None)
    noisy = add_noise(d.train_y.numpy(), rate, d.n_classes, type.value, seed)
    noisy.meta["data"] = str(data)
    save_labels(out, noisy, d.classes, d.train_items)
    table = Table(title=f"{type.value} noise, rate {rate:g}, seed {seed}", title_justify="left")
    for col in ("class", "examples", "flipped", "rate"):
        table.add_column(col, justify="right")
    for c, name in enumerate(d.classes):
        m = noisy.true == c
        table.add_row(name, str(int(m.sum())), str(int(noisy.flipped[m].sum())),
                      f"{noisy.flipped[m].mean():.3f}" if m.any() else "-")
    console.print(table)
    if d.skipped:
        console.print(f"[yellow]skipped {len(d.skipped)} unreadable image file(s)[/]")
    console.print(f"realised noise rate {noisy.realised_rate:.4f} over {len(noisy)} training labels "
                  f"({int(np.sum(noisy.flipped))} wrong)")
    console.print(f"wrote {out} (index, item, true_label, given_label, flipped)")
