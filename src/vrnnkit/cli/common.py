"""What every command shares: the app, the consoles, and user errors as messages and exit codes."""

from __future__ import annotations

import errno
import functools
import os
import warnings
from collections.abc import Callable
from typing import Annotated, Any, Optional, TypeVar

import typer
from rich.console import Console
from rich.text import Text

from vrnnkit._version import __version__
from vrnnkit.errors import RunError, VRNNKitError, WriteWarning
from vrnnkit.resources.budget import memory_message, out_of_memory
from vrnnkit.resources.threads import choose_threads

app = typer.Typer(
    name="vrnnkit",
    help="Variational recurrent neural networks (VRNN) for sequences and video.",
    no_args_is_help=True,
    add_completion=True,
    pretty_exceptions_enable=False,
)
# No markup: paths and messages print as they are, brackets included.
console = Console(markup=False)
errors = Console(stderr=True, markup=False)

F = TypeVar("F", bound=Callable[..., Any])


def friendly_errors(command: F) -> F:
    """Turn the errors a user can fix into a message and an exit code: 2 for bad input, 1 for
    a failure while running."""

    @functools.wraps(command)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        if os.environ.get("VRNNKIT_DEBUG") == "1":
            return command(*args, **kwargs)
        try:
            with warnings.catch_warnings():
                # A library warning (an ambiguous layout, say) reaches the user as a note.
                warnings.showwarning = _note
                return command(*args, **kwargs)
        except RunError as error:
            _error(str(error))
            code = 1
        except VRNNKitError as error:
            _error(str(error))
            code = 2
        except OSError as error:
            _error(_os_error_message(error))
            code = 1
        except (MemoryError, RuntimeError) as error:  # the last line of defence: an allocation failed
            if not out_of_memory(error):
                raise
            _error(memory_message(error))
            code = 1
        except KeyboardInterrupt:  # outside a training loop, which handles Ctrl-C itself
            _error("interrupted")
            code = 130
        raise typer.Exit(code)

    return wrapper  # type: ignore[return-value]


# What an OS error means for a path the user gave, where its own words ("File exists") are vague.
_OS_ERROR_MEANINGS = {
    errno.EEXIST: "a file is in the way where a folder is needed",
    errno.ENOTDIR: "a part of this path is a file, not a folder",
    errno.EISDIR: "it is a folder; expected a file",
}


def _os_error_message(error: OSError) -> str:
    meaning = _OS_ERROR_MEANINGS.get(error.errno or -1, error.strerror or str(error))
    if error.filename is None:
        return meaning
    return f"{error.filename}: {meaning}"


def _note(message: Warning | str, *args: Any, **kwargs: Any) -> None:
    # An optional file that could not be written (samples, TensorBoard) is a warning; the rest notes.
    kind = "warning" if isinstance(message, WriteWarning) else "note"
    errors.print(f"{kind}: {message}", highlight=False, soft_wrap=True)


def _error(message: str) -> None:
    errors.print(Text("error: ", style="red") + Text(message), highlight=False, soft_wrap=True)


def say(message: str) -> None:
    """A line of output (stdout), printed as it is."""
    console.print(message, highlight=False, soft_wrap=True)


def note(message: str) -> None:
    """A line about the run (stderr), printed as it is."""
    errors.print(message, highlight=False, soft_wrap=True)


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
    debug: Annotated[bool, typer.Option("--debug", help="Show full tracebacks (also VRNNKIT_DEBUG=1).")] = False,
) -> None:
    """Variational recurrent neural networks (VRNN) for sequences and video.

    Start with `vrnnkit train`: it trains a VRNN on generated bouncing balls and writes a run
    folder under runs/ with the model, its metrics and a GIF of sampled clips.
    """
    if debug:
        os.environ["VRNNKIT_DEBUG"] = "1"
    choose_threads()  # PyTorch's thread count, capped at the idle cores unless OMP_NUM_THREADS is set


def main() -> None:
    app()
