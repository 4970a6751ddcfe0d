"""`fastgr tune`: pick GR's lam and beta on held-out noisy training labels."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.table import Table

from fastgr.config import LOSSES
from fastgr.presets import TUNE_GRID

from .base import command, console
from .options import (
    DEFAULTS,
    PANEL_RUN,
    PANEL_TUNING,
    Amp,
    Arch,
    AugmentOpt,
    Balanced,
    Bs,
    Classes,
    CompileOpt,
    Data,
    Device,
    Epochs,
    Eps,
    FreezeEpochs,
    ImgSize,
    InMemory,
    InMemoryOpt,
    Labels,
    Lr,
    Noise,
    NoiseType,
    NoiseTypeOpt,
    Overwrite,
    Pretrained,
    Seed,
    ValidPct,
    Warmup,
    WarmupMode,
    WarmupModeOpt,
    Wd,
    Weights,
    build_config,
    option,
    refuse_ignored,
)
from .render import RichReporter, fmt


def parse_grid(value: str | None) -> list[tuple[float, ...] | str] | None:
    "'0.5,8 1,16,0.5 ce' -> [(0.5, 8.0), (1.0, 16.0, 0.5), 'ce']"
    if value is None:
        return None
    baselines = [b for b in LOSSES if b != "gr"]
    usage = (f"--grid takes lam,beta or lam,beta,warmup settings and baseline names ({', '.join(baselines)}) "
             "separated by spaces, e.g. '0.5,8 1,16,0.5 ce'")
    grid: list[tuple[float, ...] | str] = []
    for setting in value.replace(";", " ").split():
        if setting in baselines:
            grid.append(setting)
            continue
        try:
            g = tuple(float(x) for x in setting.split(","))
        except ValueError:
            raise typer.BadParameter(f"{usage}; got {value!r}") from None
        if len(g) not in (2, 3) or min(g) < 0 or (len(g) == 3 and g[2] > 1):
            raise typer.BadParameter(f"{usage} (non-negative; warm-up at most 1); got {value!r}")
        grid.append(g)
    if not grid:
        raise typer.BadParameter(f"{usage}; got {value!r}")
    return grid


GRID_DEFAULT = " ".join(s if isinstance(s, str) else ",".join(f"{v:g}" for v in s) for s in TUNE_GRID)


@command(epilog="Example: fastgr tune digits --noise 0.4 --epochs 30 --grid '0.5,8 1,16'\n\n"
                "fastgr train --tune runs the same search first, then trains with the winner.")
def tune(
    ctx: typer.Context,
    data: Data = DEFAULTS.data,
    grid: str = option(PANEL_TUNING, GRID_DEFAULT, "--grid", metavar="GRID", callback=parse_grid,
                       help="lam,beta or lam,beta,warmup settings of GR, and baselines by name "
                            f"({', '.join(LOSSES[1:])}), to try, separated by spaces; --warmup, when given, "
                            "overrides the settings' own."),
    tune_holdout: float = option(PANEL_TUNING, DEFAULTS.tune_holdout, "--holdout", metavar="FRAC", min=0.01, max=0.9,
                                 help="Fraction of the (noisy) training set held out to score each setting."),
    arch: Arch = DEFAULTS.arch,
    pretrained: Pretrained = DEFAULTS.pretrained,
    weights: Weights = None,
    freeze_epochs: FreezeEpochs = DEFAULTS.freeze_epochs,
    noise: Noise = DEFAULTS.noise,
    noise_type: NoiseTypeOpt = NoiseType(DEFAULTS.noise_type),
    labels: Labels = None,
    warmup: Warmup = DEFAULTS.warmup,
    warmup_mode: WarmupModeOpt = WarmupMode(DEFAULTS.warmup_mode),
    eps: Eps = DEFAULTS.eps,
    epochs: Epochs = DEFAULTS.epochs,
    lr: Lr = DEFAULTS.lr,
    bs: Bs = DEFAULTS.bs,
    balanced: Balanced = DEFAULTS.balanced,
    wd: Wd = DEFAULTS.wd,
    img_size: ImgSize = DEFAULTS.img_size,
    augment: AugmentOpt = DEFAULTS.augment,
    in_memory: InMemoryOpt = InMemory(DEFAULTS.in_memory),
    valid_pct: ValidPct = DEFAULTS.valid_pct,
    classes: Classes = None,
    seed: Seed = DEFAULTS.seed,
    device: Device = DEFAULTS.device,
    amp: Amp = DEFAULTS.amp,
    compile: CompileOpt = DEFAULTS.compile,
    out: Path = option(PANEL_RUN, None, "--out", metavar="DIR",
                       help="Folder for tune.csv and the tuning runs. \\[default: none kept]"),
    overwrite: Overwrite = False,
):
    """Try a grid of (lam, beta, warm-up) under the final run's epoch budget; score each on held-out noisy labels."""
    params = dict(locals())
    refuse_ignored(ctx, params)
    cfg = build_config(params)
    from fastgr.tuning import tune_run

    reporter = RichReporter()
    try:
        result = tune_run(cfg, out, grid, reporter, overwrite)
    finally:
        reporter.stop()
    table = Table(title=f"accuracy on {result['n_holdout']} held-out training labels (noisy), "
                        f"{epochs} epochs each", title_justify="left")
    # where the truth is known (injected noise, a labels file with it), what the tuner would have chosen with it:
    # shown to judge the choice, never used to make it
    truth = any(r.get("holdout_acc_true") is not None for r in result["table"])
    for col in ("loss", "lam", "beta", "warm-up", "held-out acc", "best epoch acc", *(("true labels",) * truth), "ess",
                "collapsed epochs", "s"):
        table.add_column(col, justify="right")
    g = "{:g}"
    for r in result["table"]:
        key = ("loss", "lam", "beta", "warmup")
        chosen = [r[k] for k in key] == [result[k] for k in key]
        table.add_row(r["loss"], fmt(r["lam"], g), fmt(r["beta"], g), fmt(r["warmup"], g), fmt(r["holdout_acc_noisy"]),
                      fmt(r["holdout_acc_noisy_best"]), *((fmt(r.get("holdout_acc_true")),) * truth),
                      fmt(r["ess_final"], "{:.3f}"),
                      str(r["emphasis_collapse_epochs"]), f"{r['seconds']:.0f}",
                      style="bold green" if chosen else None)
    console.print(table)
    chosen = f"--loss {result['loss']}" if result["loss"] != "gr" else \
        f"--lam {result['lam']:g} --beta {result['beta']:g} --warmup {result['warmup']:g}"
    console.print(f"chosen: [bold]{chosen}[/]" + (f" (tune.csv in {out})" if out else ""))
    if truth:
        console.print("true labels: accuracy on the held-out part's true labels, to judge the choice; not used to "
                      "make it")
