"""The ``vrnnkit`` command line: a thin layer over the Python API.

Commands parse their options, call the library and print. Exit codes: 0 success, 2 bad usage
(a bad option value, config file, data file or checkpoint), 1 a failure while running (a
non-finite loss, a full disk), 130 interrupted. Messages go to stderr; a traceback only with
``--debug`` or ``VRNNKIT_DEBUG=1``.
"""

from __future__ import annotations

import errno
import functools
import os
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, Optional, TypeVar

import typer
from rich.console import Console
from rich.table import Table
from rich.text import Text

from vrnnkit._version import __version__
from vrnnkit.errors import RunError, VRNNKitError

app = typer.Typer(
    name="vrnnkit",
    help="Variational recurrent neural networks (VRNN) for sequences and video.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
data_app = typer.Typer(
    help="Generate the built-in datasets as uint8 .npy files that every vrnnkit command reads.",
    no_args_is_help=True,
)
app.add_typer(data_app, name="data")
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
    errors.print(f"note: {message}", highlight=False, soft_wrap=True)


def _error(message: str) -> None:
    errors.print(Text("error: ", style="red") + Text(message), highlight=False, soft_wrap=True)


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


Out = Annotated[Path, typer.Option("--out", "-o", help="The .npy file to write (uint8, (N, T, H, W)).")]
Count = Annotated[int, typer.Option(min=1, help="Number of sequences.")]
Length = Annotated[int, typer.Option(min=1, help="Frames per sequence.")]
Seed = Annotated[int, typer.Option(min=0, help="Random seed; the same seed gives the same file.")]


@data_app.command("bouncing-balls")
@friendly_errors
def data_bouncing_balls(
    out: Out,
    count: Count = 1000,
    length: Length = 20,
    balls: Annotated[int, typer.Option(min=1, help="Balls per sequence.")] = 3,
    size: Annotated[int, typer.Option(min=8, help="Frame side in pixels.")] = 32,
    seed: Seed = 0,
) -> None:
    """Bouncing balls (Sutskever et al.): the embedded default dataset."""
    import numpy as np

    from vrnnkit.data import bouncing_balls

    rng = np.random.default_rng(seed)
    _write_in_chunks(
        out, count, (length, size, size),
        lambda n: np.rint(bouncing_balls(n, length=length, n_balls=balls, size=size, seed=rng) * 255).astype(np.uint8),
    )


@data_app.command("moving-mnist")
@friendly_errors
def data_moving_mnist(
    out: Out,
    mnist_dir: Annotated[Path, typer.Option(help="Folder with the MNIST IDX files (.gz or raw).")],
    split: Annotated[str, typer.Option(help="Which MNIST files to read: train or test.")] = "test",
    digit_start: Annotated[int, typer.Option(min=0, help="First digit image to use (index).")] = 0,
    digit_stop: Annotated[Optional[int], typer.Option(help="Stop before this digit image; all by default.")] = None,  # noqa: UP045
    stochastic: Annotated[bool, typer.Option(help="Draw a new velocity at each wall hit (SRVP's stochastic variant).")] = False,
    count: Count = 1000,
    length: Length = 20,
    digits: Annotated[int, typer.Option(min=1, help="Digits per video.")] = 2,
    canvas: Annotated[int, typer.Option(min=29, help="Canvas side in pixels.")] = 64,
    seed: Seed = 0,
) -> None:
    """Moving MNIST from your MNIST files; pick disjoint digit ranges for training and test."""
    import numpy as np

    from vrnnkit.data import load_mnist, moving_mnist

    images, _ = load_mnist(mnist_dir, split=split)
    stop = len(images) if digit_stop is None else digit_stop
    if not digit_start < stop <= len(images):
        raise typer.BadParameter(
            f"the digit range {digit_start}:{stop} must be non-empty and within the {len(images)} images",
            param_hint="--digit-start/--digit-stop",
        )
    rng = np.random.default_rng(seed)
    _write_in_chunks(
        out, count, (length, canvas, canvas),
        lambda n: moving_mnist(
            images, n, length=length, num_digits=digits, canvas_size=canvas,
            stochastic=stochastic, indices=np.arange(digit_start, stop), seed=rng,
        ),
    )


_CHUNK = 500  # sequences per generator call: the progress bar's unit, and part of the seed's meaning


def _write_in_chunks(out: Path, count: int, frame_shape: tuple[int, ...], generate: Callable[[int], Any]) -> None:
    """Fill a uint8 (count, *frame_shape) .npy file chunk by chunk, atomically, with progress."""
    import numpy as np
    from numpy.lib.format import open_memmap
    from rich.progress import Progress

    from vrnnkit._atomic import atomic_path
    from vrnnkit.errors import ConfigError, output_problem

    if out.suffix != ".npy":
        raise typer.BadParameter(f"expected a path ending in .npy, got {out}", param_hint="--out")
    problem = output_problem(out)
    if problem:
        raise ConfigError(f"cannot write {out} (--out): {problem}")
    with atomic_path(out) as tmp:
        array = open_memmap(tmp, mode="w+", dtype=np.uint8, shape=(count, *frame_shape))
        with Progress(console=errors, transient=True, disable=count <= _CHUNK) as progress:
            task = progress.add_task(f"writing {out.name}", total=count)
            for start in range(0, count, _CHUNK):
                n = min(_CHUNK, count - start)
                array[start : start + n] = generate(n)
                progress.advance(task, n)
        array.flush()
        del array
    console.print(f"wrote {out}: {count} sequences of shape {frame_shape}, uint8")


from vrnnkit import cli_infer, cli_train  # noqa: E402,F401  (they register their commands)


def main() -> None:
    app()
