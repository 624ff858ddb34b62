"""``vrnnkit data``: the built-in data sets as uint8 .npy files (``vrnnkit.api.write_dataset``), and
any data file resized and converted to a .npy file (``vrnnkit.api.convert_file``)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Optional

import numpy as np
import typer
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TransferSpeedColumn,
)

from vrnnkit import api
from vrnnkit.cli.common import app, errors, friendly_errors, note, say
from vrnnkit.cli.infer import Grey, Size
from vrnnkit.data import download
from vrnnkit.data.actions import load_action_data
from vrnnkit.data.catalog import DATA_ENV, DATASETS, get_dataset
from vrnnkit.data.sources import CHUNK

data_app = typer.Typer(
    help="Download MNIST and JSB Chorales into the data cache; generate the built-in datasets as uint8 .npy files that every vrnnkit command reads.",
    no_args_is_help=True,
)
app.add_typer(data_app, name="data")

Out = Annotated[Path, typer.Option("--out", "-o", help="The .npy file to write (uint8, (N, T, H, W)).")]
Count = Annotated[int, typer.Option(min=1, help="Number of sequences.")]
Length = Annotated[int, typer.Option(min=1, help="Frames per sequence.")]
Seed = Annotated[int, typer.Option(min=0, help="Random seed; the same seed gives the same file (and vrnnkit.api.generate_dataset the same array).")]


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
    _write(out, "bouncing-balls", count, seed=seed, length=length, balls=balls, size=size)


@data_app.command("moving-mnist")
@friendly_errors
def data_moving_mnist(
    out: Out,
    mnist_dir: Annotated[Optional[Path], typer.Option(help="Folder with the MNIST IDX files (.gz or raw); default: the MNIST test set in the data cache, downloaded when missing.", show_default=False)] = None,  # noqa: UP045
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
    """Moving MNIST from MNIST digits; pick disjoint digit ranges for training and test."""
    _write(out, "moving-mnist", count, seed=seed, length=length, mnist_dir=mnist_dir, split=split,
           digit_start=digit_start, digit_stop=digit_stop, stochastic=stochastic, digits=digits, canvas=canvas)


@data_app.command("pushed-ball")
@friendly_errors
def data_pushed_ball(
    out: Annotated[Path, typer.Option("--out", "-o", help="The .npz file to write: frames (uint8, (N, T, 1, H, W)) and actions (float32, (N, T, 2 x balls)).")],
    sequences: Annotated[int, typer.Option(min=1, help="Number of sequences.")] = 2000,
    steps: Annotated[int, typer.Option(min=2, help="Frames per sequence.")] = 20,
    size: Annotated[int, typer.Option(min=8, help="Frame side in pixels.")] = 32,
    balls: Annotated[int, typer.Option(min=1, help="Balls per frame, each pushed by its own 2-D force.")] = 1,
    walls: Annotated[str, typer.Option(help="What a wall does to a ball: bounce or stop.")] = "bounce",
    hold: Annotated[float, typer.Option(min=0.0, max=0.99, help="Probability that a step keeps the previous step's force.")] = 0.6,
    seed: Seed = 0,
) -> None:
    """A ball pushed by a random 2-D force each step, with the forces: data with actions for a world model.

    actions[:, t] is the force applied before frame t (actions[:, 0] is zeros)."""
    with Progress(console=errors, transient=True, disable=sequences <= CHUNK) as progress:
        task = progress.add_task(f"writing {out.name}", total=sequences)
        shape = api.write_pushed_ball(out, sequences, steps=steps, size=size, balls=balls, walls=walls, hold=hold,
                                      seed=seed, on_progress=lambda done, _: progress.update(task, completed=done))
    say(f"wrote {out}: {shape[0]} sequences of shape {tuple(shape[1:])}, uint8, with {2 * balls} action values a step")


@data_app.command("gym")
@friendly_errors
def data_gym(
    env_id: Annotated[str, typer.Argument(metavar="ENV_ID", help="A gymnasium environment, e.g. CarRacing-v3 or ALE/Pong-v5.", show_default=False)],
    out: Annotated[Path, typer.Option("--out", "-o", help="The .npz file to write: frames (uint8, (N, T, SIZE, SIZE, 3)), actions, rewards, lengths.")],
    episodes: Annotated[int, typer.Option(min=1, help="Episodes to record.")] = 10,
    policy: Annotated[str, typer.Option(help="random (uniform actions), sticky (random actions held for a while) or heuristic (a noisy driver on CarRacing; sticky elsewhere).")] = "heuristic",
    size: Annotated[int, typer.Option(min=8, help="Frame side in pixels (square, colour).")] = 64,
    max_steps: Annotated[Optional[int], typer.Option(min=1, help="Frames recorded per episode at most (default: the environment's limit, else 1000).", show_default=False)] = None,  # noqa: UP045
    skip_frames: Annotated[Optional[int], typer.Option(min=0, help="Steps left out at the start of each episode (default: 50 for CarRacing's zoom-in, else 0).", show_default=False)] = None,  # noqa: UP045
    stickiness: Annotated[float, typer.Option(min=0.0, max=0.99, help="For sticky: the probability of repeating the previous action.")] = 0.8,
    seed: Annotated[int, typer.Option(min=0, help="Seeds the environment (episode i resets with SEED + i) and the policy.")] = 0,
    action_repeat: Annotated[int, typer.Option(min=1, help="Hold each action for this many environment steps and record the frame after them (rewards summed): one recorded step spans that many of the environment's.")] = 1,
) -> None:
    r"""Record episodes of a gymnasium environment with the actions taken (needs pip install 'vrnnkit\[gym]').

    actions[:, t] is the action that led to frame t. Rendering is headless; frames are written
    to disk as they come, so memory stays small."""
    with Progress(TextColumn("{task.description}"), BarColumn(), TextColumn("{task.completed:.0f}/{task.total:.0f} episodes"),
                  TimeElapsedColumn(), console=errors, transient=True, disable=not errors.is_terminal) as progress:
        task = progress.add_task(f"recording {env_id}", total=episodes)

        def report(episode: int, frames: int) -> None:
            progress.update(task, completed=episode, description=f"{env_id} episode {episode + 1}: {frames} frames")

        summary = api.record_gym(out, env_id, episodes, policy=policy, size=size, max_steps=max_steps,
                                 skip_frames=skip_frames, stickiness=stickiness, seed=seed, action_repeat=action_repeat,
                                 on_step=report)
    say(f"wrote {out}: {summary['episodes']} episodes, {summary['frames']:,} frames, frames of shape "
        f"{summary['shape']}; actions of {summary['action_space']}")


@data_app.command("check-actions")
@friendly_errors
def data_check_actions(
    path: Annotated[Path, typer.Argument(help="A .npz with frames and actions, or a folder of them.", show_default=False)],
    action_classes: Annotated[Optional[int], typer.Option(min=2, help="Number of classes of integer (discrete) actions, one-hot encoded (default: the file's action_classes).", show_default=False)] = None,  # noqa: UP045
    layout: Annotated[Optional[str], typer.Option(help="Layout of the frames, e.g. NTHW, NTHWC (guessed by default).", show_default=False)] = None,  # noqa: UP045
) -> None:
    """Read frames with their actions as training would, and say what they hold (or what is wrong)."""
    data = load_action_data(path, action_classes=action_classes, layout=layout)
    count, steps = data.frames.shape[:2]
    lengths = "" if data.lengths is None else f" (observed: {int(data.lengths.min())} to {int(data.lengths.max())})"
    names = "" if data.action_names is None else f" ({', '.join(data.action_names)})"
    low, high = data.actions.min(axis=(0, 1)), data.actions.max(axis=(0, 1))
    say(f"{path}: {count} sequences of {steps} steps{lengths}; frames {data.frame_shape} {data.frames.dtype}; "
        f"{data.action_dim} action values a step{names}, from {np.array2string(low, precision=3)} to "
        f"{np.array2string(high, precision=3)}")


@data_app.command("convert")
@friendly_errors
def data_convert(
    input: Annotated[Path, typer.Argument(help="A video or sequence file: .npy, .npz, .gif, .mp4; or a folder of clips.", show_default=False)],
    out: Annotated[Path, typer.Option("--out", "-o", help="The .npy file to write: (N, T, H, W) grey, (N, T, H, W, C) colour; uint8 from videos and uint8 files. For a folder of clips: a folder, one uint8 .npy per clip.")],
    size: Size = None,
    grey: Grey = False,
    layout: Annotated[Optional[str], typer.Option(help="Layout of INPUT, e.g. THW, NTHW, TNHW (guessed by default).", show_default=False)] = None,  # noqa: UP045
    key: Annotated[Optional[str], typer.Option(help="The array to read from a .npz holding several.", show_default=False)] = None,  # noqa: UP045
) -> None:
    """Resize and convert a video or sequence file once (e.g. a long .mp4 to 64x64 grey), into a .npy file every command reads fast."""
    shape = api.convert_file(input, out, size=size, grey=grey, layout=layout, key=key)
    if input.is_dir():
        say(f"wrote {out}: {shape[0]} {'clip' if shape[0] == 1 else 'clips'}, {shape[1]:,} frames of shape {shape[2:]}")
    else:
        say(f"wrote {out}: {shape[0]} sequence(s) of shape {shape[1:]}")


@data_app.command("download")
@friendly_errors
def data_download(
    name: Annotated[str, typer.Argument(help=f"The data set: {', '.join(DATASETS)}.", show_default=False)],
    cache_dir: Annotated[Optional[Path], typer.Option(help=f"The cache folder (default: ${DATA_ENV}, else the user cache folder).", show_default=False)] = None,  # noqa: UP045
) -> None:
    """Download a data set into the cache (verified by SHA-256), or check the copy there."""
    dataset = get_dataset(name)
    with Progress(TextColumn("{task.description}"), BarColumn(), DownloadColumn(), TransferSpeedColumn(),
                  console=errors, disable=not errors.is_terminal) as progress:
        tasks: dict[str, Any] = {}

        def report(file: str, done: int, total: int | None) -> None:
            if file not in tasks:
                tasks[file] = progress.add_task(file, total=total)
                if not errors.is_terminal:
                    note(f"downloading {dataset.url(next(f for f in dataset.files if f.name == file))}")
            progress.update(tasks[file], completed=done, total=total)

        folder = download.fetch(name, cache_dir, on_progress=report)
    say(f"{name}: {folder} ({', '.join(f.name for f in dataset.files)}; SHA-256 checked)")


def _write(out: Path, name: str, count: int, **options: Any) -> None:
    with Progress(console=errors, transient=True, disable=count <= CHUNK) as progress:
        task = progress.add_task(f"writing {out.name}", total=count)
        shape = api.write_dataset(out, name, count, on_progress=lambda done, _: progress.update(task, completed=done), **options)
    say(f"wrote {out}: {count} sequences of shape {shape[1:]}, uint8")
