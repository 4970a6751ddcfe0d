"""The `fastgr` Typer app: every command module registers itself on `app`, in the order --help lists them."""

# isort: off
from . import train, tune, noise, correct, issues, predict, weights, models  # noqa: F401  (each registers its command)
# isort: on
from .base import app

__all__ = ["app"]
