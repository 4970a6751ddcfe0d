"""The Typer app, its consoles and the error policy shared by every command."""

from __future__ import annotations

import functools
import os
import sys
import warnings
from collections.abc import Callable
from pathlib import Path

# the CLI only writes PNGs; never open a GUI backend
os.environ.setdefault("MPLBACKEND", "Agg")
# a dependency's import-time deprecation notice, not something a user of the CLI can act on
warnings.filterwarnings("ignore", message=r".*torch\.jit\.script.* is deprecated", category=FutureWarning)

import typer  # noqa: E402
from rich.console import Console  # noqa: E402

try:  # typer vendors click since 0.24; its exceptions are not the `click` package's
    from typer._click.exceptions import ClickException, UsageError  # noqa: E402
except ImportError:  # pragma: no cover - older typer
    from click.exceptions import ClickException, UsageError  # noqa: E402

app = typer.Typer(
    name="fastgr",
    help="Gradient rescaling (GR) for fastai: train classifiers that stay accurate when labels are wrong.",
    no_args_is_help=True,
    add_completion=True,
    pretty_exceptions_enable=False,
    rich_markup_mode="rich",
)
console = Console(highlight=False)
err_console = Console(stderr=True, highlight=False)
state = {"debug": False}


class UserError(Exception):
    "Bad input that the user can fix: shown as one red line, exit status 1."


def fail(message: str) -> None:
    raise UserError(message)


def usage_error(message: str) -> None:
    "Wrong use of the command line: Click's usage message, exit status 2."
    raise UsageError(message)


def command(*, epilog: str, **kwargs) -> Callable:
    """Register a command whose errors become one red line and exit status 1 (a traceback with --debug).

    Usage errors stay Click's: exit status 2 with the usage line.
    """

    def register(fn: Callable) -> Callable:
        @functools.wraps(fn)
        def run(*args, **kw):
            try:
                return fn(*args, **kw)
            except (typer.Exit, typer.Abort, ClickException):
                raise
            except KeyboardInterrupt:
                err_console.print("[bold red]interrupted[/]", soft_wrap=True)
                raise typer.Exit(130) from None
            except Exception as e:  # noqa: BLE001 - the policy: one line, traceback with --debug
                if state["debug"]:
                    raise
                err_console.print(f"[bold red]error:[/] {one_line(e)}", soft_wrap=True, markup=True)
                raise typer.Exit(1) from None

        return app.command(epilog=epilog, **kwargs)(run)

    return register


def one_line(e: BaseException) -> str:
    text = str(e) if isinstance(e, UserError) else (str(e) or type(e).__name__)
    if isinstance(e, OSError) and e.filename:
        text = f"{e.strerror or type(e).__name__}: {e.filename}"
    text = " ".join(text.split())
    return text.replace("[", "\\[")


def new_file(path: Path, overwrite: bool) -> Path:
    "Refuse to replace a user's file unless asked; a folder is never replaced."
    if path.is_dir():
        fail(f"{path} is a folder, not a file: name the file to write")
    if path.exists() and not overwrite:
        fail(f"{path} exists; pass --overwrite to replace it")
    return path


def bytecode_missing(module: str = "torch") -> bool:
    "Whether `module` has no compiled bytecode yet: importing it then compiles it from source first."
    import importlib.util

    spec = importlib.util.find_spec(module)
    if spec is None or not spec.origin or not spec.origin.endswith(".py"):
        return False
    return not Path(importlib.util.cache_from_source(spec.origin)).exists()


def _print_version(value: bool) -> None:
    if value:
        import fastgr

        console.print(f"fastgr {fastgr.__version__}")
        raise typer.Exit()


@app.callback()
def main(
    debug: bool = typer.Option(False, "--debug", help="Show full tracebacks on errors."),
    version: bool = typer.Option(False, "--version", help="Print the version and exit.", is_eager=True,
                                 callback=_print_version),
):
    "Gradient rescaling (GR) for fastai: train classifiers that stay accurate when labels are wrong."
    state["debug"] = debug
    if err_console.is_terminal and bytecode_missing():  # a person waiting, not a log
        often = "every run, as PYTHONDONTWRITEBYTECODE is set" if sys.flags.dont_write_bytecode else "once"
        err_console.print(f"[dim]Python is compiling torch and fastai before they import (about half a minute, "
                          f"{often}); `uv sync --compile-bytecode` does it for good[/]", soft_wrap=True)
