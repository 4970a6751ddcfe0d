"""The `fastgr` Typer app: every command module registers itself on `app`."""

from . import weights  # noqa: F401  (registers its command)
from .base import app

__all__ = ["app"]
