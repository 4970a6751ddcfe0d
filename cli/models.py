"""`fastgr models`: the backbones `--arch` accepts."""

from __future__ import annotations

import typer
from rich.table import Table

from .base import command, console


@command(epilog="Examples: fastgr models  |  fastgr models 'resnet*'  |  fastgr models 'convnext*' --pretrained")
def models(
    pattern: str = typer.Argument(None, help="Shell-style filter, e.g. 'cifar_*'; a bare name matches as a substring.",
                                  show_default=False),
    pretrained: bool = typer.Option(False, "--pretrained", help="Only models with pretrained weights in timm."),
):
    """List the backbones: He et al.'s CIFAR ResNets and every timm model."""
    from fastgr.models import list_backbones

    if pattern and not any(ch in pattern for ch in "*?["):
        pattern = f"*{pattern}*"  # a bare name matches as a substring: `fastgr models resnet`
    rows = list_backbones(pattern or "*")
    if pretrained:
        rows = [r for r in rows if r[1]]
    shown = rows if pattern else [r for r in rows if r[0].startswith("cifar_resnet")]
    table = Table(title_justify="left", title=f"{len(rows)} backbone(s)" + (f" matching {pattern!r}" if pattern
                                                                             else ""))
    table.add_column("name")
    table.add_column("pretrained weights")
    for name, has in shown:
        table.add_row(name, "yes (download)" if has else "no")
    console.print(table)
    if pattern and not rows:
        console.print(f"no backbone matches {pattern!r}; `fastgr models` lists the CIFAR ResNets and how many timm "
                      "models there are")
    if not pattern:
        console.print(f"shown: the CIFAR ResNets; {len(rows) - len(shown)} more timm models: "
                      "fastgr models 'PATTERN' (e.g. 'resnet*')")
