"""`fastgr weights`: GR's emphasis focus, spread and weight curve."""

from __future__ import annotations

import math
from pathlib import Path

import typer
from rich.table import Table

from fastgr.presets import FIXED_DEFAULT

from .base import command, console, new_file
from .options import finite


def _exp_text(log_value: float) -> str:
    "exp(log_value) as a number, or as e^x where it would overflow; 0 for -inf."
    if log_value == float("-inf"):
        return "0"
    return f"{math.exp(log_value):.4g}" if log_value < 700 else f"e^{log_value:.1f}"


def _bar(fraction: float, width: int = 36) -> str:
    blocks = " ▏▎▍▌▋▊▉█"
    eighths = round(max(0.0, min(1.0, fraction)) * width * 8)
    return "█" * (eighths // 8) + (blocks[eighths % 8] if eighths % 8 else "")


@command(epilog="Example: fastgr weights --lam 1 --beta 16 --plot weights.png")
def weights(
    lam: float = typer.Option(FIXED_DEFAULT.lam, "--lam", min=0, callback=finite,
                              help="Emphasis focus parameter (>= 0)."),
    beta: float = typer.Option(FIXED_DEFAULT.beta, "--beta", min=0, callback=finite,
                               help="Emphasis spread parameter (>= 0)."),
    transform: str = typer.Option("exp", "--transform", help="exp (GR) or identity."),
    steps: int = typer.Option(21, "--steps", min=2, max=1001, help="Points of p shown in the table."),
    plot: Path | None = typer.Option(None, "--plot", help="Also write the curve as a PNG here."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an existing --plot file."),
):
    """Show GR's emphasis: its focus, its spread over p, and the weight curve (the paper's Fig. 1)."""
    import torch

    from fastgr import check_settings, emphasis_focus, emphasis_spread, weight_curve, weight_variance

    lam, beta, _ = check_settings(lam, beta, transform, "sum")
    if plot is not None:
        new_file(plot, overwrite)
    p = torch.linspace(0, 1, steps, dtype=torch.float64)
    # the exponent beta * p**lam * (1 - p); GR's weight is its exp, which overflows even float64 past beta ~2800:
    # everything shown is computed from weights divided by the largest, which cannot
    s = weight_curve(p, lam, beta, "identity")
    s_dense = weight_curve(torch.linspace(0, 1, 1001, dtype=torch.float64), lam, beta, "identity")
    if transform == "exp":
        top_s = s_dense.max()
        w, dense = torch.exp(s - top_s), torch.exp(s_dense - top_s)
        raw = [f"{math.exp(v):.4g}" if v < 700 else f"e^{v:.1f}" for v in s.tolist()]
        spread_ratio = (s_dense.max() - s_dense.min()).item()
        ratio = f"{math.exp(spread_ratio):.4g}" if spread_ratio < 700 else f"e^{spread_ratio:.1f}"
    else:
        w, dense = s, s_dense
        raw = [f"{v:.4g}" for v in s.tolist()]
        ratio = f"{(dense.max() / dense.min()).item():.4g}" if dense.min() > 0 else "unbounded (weight 0 at p = 0, 1)"
    # Def. 2's raw variance of the weight over p uniform in [0, 1] (its log: GR's raw weights overflow)
    raw_var = (weight_variance(s_dense) if transform == "exp" else torch.log(torch.var(s_dense, correction=0))).item()
    focus = emphasis_focus(lam)
    console.print(f"emphasis focus  lam/(1+lam) = [bold]{focus:.3f}[/]  (examples with p near it weigh most)")
    console.print(
        f"emphasis spread over p in [0, 1]: variance at mean 1 = [bold]{emphasis_spread(dense).item():.4g}[/] "
        f"(fastgr's gr_spread; 0: every example alike); raw variance (the paper's Def. 2) = "
        f"[bold]{_exp_text(raw_var)}[/]; max/min weight = {ratio}"
    )
    rel = w / dense.mean()
    table = Table(title=f"weight g(beta·p^lam·(1-p)), {transform}, lam={lam:g}, beta={beta:g}")
    table.add_column("p", justify="right")
    table.add_column("weight", justify="right")
    table.add_column("relative", justify="right")
    table.add_column("", no_wrap=True)
    top = rel.max().item()
    for pi, wi, ri in zip(p.tolist(), raw, rel.tolist()):
        rel_text = f"{ri:.3f}" if ri >= 1e-3 or ri == 0 else f"{ri:.1e}"
        table.add_row(f"{pi:.2f}", wi, rel_text, _bar(ri / top if top > 0 else 0))
    console.print(table)
    console.print("relative: weight / its mean over p in [0, 1] (1 = an average example)")
    if plot is not None:
        from fastgr.plots import plot_weight_curves, save_figure

        save_figure(plot_weight_curves([(lam, beta)], transform), plot)
        console.print(f"wrote {plot}")
