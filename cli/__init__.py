"""The `fastgr` command line (installed as `fastgr.cli`)."""

from .app import app

__all__ = ["app"]
