"""The ``vrnnkit`` command line: a thin layer over the Python API."""

from __future__ import annotations

from typing import Annotated, Optional

import typer
from rich.console import Console
from rich.table import Table

from vrnnkit._version import __version__

app = typer.Typer(
    name="vrnnkit",
    help="Variational recurrent neural networks (VRNN) for sequences and video.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
console = Console()


def _show_version(value: bool) -> None:
    if value:
        console.print(f"vrnnkit {__version__}")
        raise typer.Exit()


@app.callback()
def main_options(
    version: Annotated[
        Optional[bool],  # noqa: UP045 (typer reads the annotation at run time on Python 3.10)
        typer.Option("--version", callback=_show_version, is_eager=True, help="Print the version and exit."),
    ] = None,
) -> None:
    """Variational recurrent neural networks (VRNN) for sequences and video."""


@app.command()
def blocks() -> None:
    """List the registered blocks of every kind, plug-ins included."""
    from vrnnkit.registry import list_blocks

    table = Table(title="Registered blocks")
    table.add_column("kind")
    table.add_column("names")
    for kind, names in list_blocks().items():
        table.add_row(kind, ", ".join(names))
    console.print(table)


def main() -> None:
    app()
