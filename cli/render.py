"""Rendering of runs: the live per-epoch table, summaries and reports (rich)."""

from __future__ import annotations

import time
from typing import Any

from rich.console import Group
from rich.live import Live
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Table

from fastgr.report import COLUMN_NAMES, Reporter

from .base import console

# metrics.csv column -> (header, format); the headers are the library's, which curves.png uses too
FORMATS = {"epoch": "{:.0f}", "train_loss": "{:.4f}", "valid_loss": "{:.4f}", "test_acc": "{:.4f}",
           "train_acc_given": "{:.3f}", "train_acc_true": "{:.3f}", "gr_spread": "{:.3f}", "gr_ess": "{:.3f}",
           "gr_mean_p": "{:.3f}", "seconds": "{:.1f}"}
COLUMNS = {col: (COLUMN_NAMES[col], fmt) for col, fmt in FORMATS.items()}


# dropped in this order when a terminal is too narrow for every column: test accuracy and the fits stay
DROP_FIRST = ("gr_spread", "valid_loss", "gr_mean_p", "train_loss", "seconds", "gr_ess")


def fit_columns(cols: list[str], width: int) -> list[str]:
    "The columns of `cols` that fit a terminal `width` wide, each in full."
    cols = list(cols)

    def need(cs):
        return sum(max(len(COLUMNS[c][0]), 7) + 3 for c in cs) + 1

    for c in DROP_FIRST:
        if need(cols) <= width:
            break
        if c in cols:
            cols.remove(c)
    return cols


def fmt(v: Any, spec: str = "{:.4f}") -> str:
    if v is None:
        return "-"
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, float):
        return spec.format(v)
    return str(v)


class RichReporter(Reporter):
    """A live table of epochs in a terminal, under it rich's progress bar of the phase's batches (elapsed time, time
    left at the speed so far); one line per epoch elsewhere (logs, pipes)."""

    def __init__(self):
        self.live: Live | None = None
        self.table: Table | None = None
        self.progress: Progress | None = None
        self.last_draw = 0.0

    def phase(self, name: str, epochs: int, start: int = 0) -> None:
        self.stop()
        self.epochs, self.name, self.done = epochs, name, start
        self.table = Table(title=f"{name}: {epochs} epochs" + (f", resumed after epoch {start}" if start else ""),
                           title_justify="left", header_style="bold")
        self.cols: list[str] | None = None
        if console.is_terminal and not console.is_dumb_terminal:
            # the phase's batches in one bar: its speed, and so the time left, is that of this session's batches
            self.progress = Progress(TextColumn("{task.description}"), BarColumn(bar_width=40), MofNCompleteColumn(),
                                     TextColumn("batches"), TimeElapsedColumn(), TextColumn("left"),
                                     TimeRemainingColumn(), console=console)
            self.task = self.progress.add_task(self._epoch_text(), total=None)
            self.live = Live(self._view(), console=console, refresh_per_second=4, transient=False)
            self.live.start()
        else:
            console.print(f"[bold]{name}[/]: {epochs} epochs" + (f" (resumed after epoch {start})" if start else ""))

    def _epoch_text(self) -> str:
        return f"epoch {min(self.done + 1, self.epochs)}/{self.epochs}"

    def _view(self):
        return Group(self.table, self.progress) if self.progress is not None else self.table

    def batch(self, i: int, n: int) -> None:
        if self.progress is None:
            return
        task = self.progress.tasks[0]
        if task.total is None:  # the first batch: the phase's batches are known now
            self.progress.update(self.task, total=(self.epochs - self.done) * n)
            self.first_epoch = self.done
        self.progress.update(self.task, completed=(self.done - self.first_epoch) * n + i,
                             description=self._epoch_text())
        now = time.monotonic()
        if self.live is not None and now - self.last_draw > 0.25:
            self.last_draw = now
            self.live.update(self._view())

    def epoch(self, row: dict[str, Any]) -> None:
        self.done += 1
        if self.cols is None:
            self.cols = [c for c in COLUMNS if c in row]
            if self.live is not None:  # a live table must fit the terminal: some columns go, the rest stay whole
                shown = fit_columns(self.cols, console.width)
                if shown != self.cols:
                    self.table.caption = "narrow terminal: some columns hidden; metrics.csv has them all"
                self.cols = shown
            for c in self.cols:
                self.table.add_column(COLUMNS[c][0], justify="right", no_wrap=True)
        self.table.add_row(*[fmt(row.get(c), COLUMNS[c][1]) for c in self.cols])
        if self.live is not None:
            self.live.update(self._view())
        else:
            console.print("  ".join(f"{COLUMNS[c][0]} {fmt(row.get(c), COLUMNS[c][1])}" for c in self.cols),
                          soft_wrap=True)

    def note(self, text: str, level: str = "info") -> None:
        style = {"warn": "yellow", "error": "bold red"}.get(level, "cyan")
        console.print(f"[{style}]{text}[/]", soft_wrap=True)

    def stop(self) -> None:
        if self.live is not None:
            self.live.update(self.table)
            self.live.stop()
            self.live = None
        self.progress = None


def summary_table(summary: dict[str, Any], title: str = "summary") -> Table:
    table = Table(title=title, title_justify="left", show_header=False)
    table.add_column("", style="bold")
    table.add_column("", justify="right")
    for k, v in summary.items():
        table.add_row(k, fmt(v))
    return table
