"""The `fastgr` command line (installed as `fastgr.cli`; its dependencies are the `cli` extra)."""

from __future__ import annotations

import sys

__all__ = ["app", "main"]

EXTRA = ("typer", "rich", "timm")  # what `pip install 'fastgr[cli]'` adds to the library's own dependencies


def __getattr__(name: str):
    if name == "app":  # the Typer app, not its module (importing `.app` binds the module to this name first)
        from .app import app

        globals()["app"] = app
        return app
    raise AttributeError(f"module 'fastgr.cli' has no attribute {name!r}")


def main() -> None:
    "The `fastgr` command: the Typer app, or one line naming the extra to install where it is missing."
    try:
        from .app import app
    except ModuleNotFoundError as e:
        if e.name not in EXTRA:
            raise
        sys.exit(f"error: the fastgr command needs {e.name}: pip install 'fastgr[cli]'")
    app(prog_name="fastgr")
