"""Writing clips and sequences to files a person can look at, or a program can read.

Image clips ``(N, T, C, H, W)`` in [0, 1]:
    .gif  the N clips side by side, animated over T frames, looping forever
    .png  a still grid: a row per clip, a column per time step
    .mp4  the same as the GIF, as a video
    .npy  the raw float32 array
Vector sequences ``(N, T, D)``:
    .npy  the raw array;  .csv  one row per (clip, step);  .png  a line plot per clip

Every file is written atomically: an error (a full disk) leaves no partial file behind, and
raises ``vrnnkit.errors.WriteError``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from vrnnkit.errors import ConfigError, WriteError, output_problem
from vrnnkit.io.atomic import atomic_path, unknown_cause, write_bytes

IMAGE_FORMATS = (".gif", ".png", ".mp4", ".npy")
VECTOR_FORMATS = (".npy", ".csv", ".png")
FRAME_MS = 150  # GIF frame duration: slow enough to follow a ball or a digit by eye
MIN_FRAME_PIXELS = 96  # smaller frames are enlarged (nearest neighbour) to about this height
CONTEXT_COLOUR = (0.85, 0.15, 0.15)  # the border of real (context) frames in predictions
TRUTH_COLOUR = (0.15, 0.55, 0.85)  # the border of ground-truth frames beside predictions
BORDER_COLOUR = (1.0, 1.0, 1.0)


def check_output(path: Path, *, image: bool) -> None:
    """Raise ConfigError unless ``path`` has a format we write and its folder exists."""
    formats = IMAGE_FORMATS if image else VECTOR_FORMATS
    kind = "image" if image else "vector"
    if path.suffix.lower() not in formats:
        raise ConfigError(
            f"cannot write {path}: for {kind} frames the output must end in {', '.join(formats)}"
        )
    problem = output_problem(path)
    if problem:
        raise ConfigError(f"cannot write {path}: {problem}")


def write_clips(path: Path, clips: torch.Tensor, borders: torch.Tensor | None = None) -> None:
    """Write clips (N, T, *frame) to ``path`` in the format its extension names.

    ``borders`` (N, T, 3) optionally colours each frame's border (to mark context frames or
    ground truth); white by default.
    """
    path = Path(path)
    clips = clips.detach().float().cpu()
    image = clips.dim() == 5
    check_output(path, image=image)
    suffix = path.suffix.lower()
    if image and suffix in (".gif", ".png"):
        # Encoded in memory, then written: an image writer that meets a full disk would try
        # again when it is collected, and print a traceback of its own.
        write_bytes(path, _encode_image(suffix, clips.clamp(0, 1), borders))
        return
    with atomic_path(path) as tmp:
        if suffix == ".npy":
            with open(tmp, "wb") as handle:
                np.save(handle, clips.numpy().astype(np.float32))
        elif not image:
            _write_vector(tmp, suffix, clips.numpy())
        else:
            _write_video(tmp, clips.clamp(0, 1), borders)
            if not complete_mp4(tmp):  # ffmpeg does not report a failed write
                raise WriteError(path, unknown_cause(tmp), detail="ffmpeg could not finish the video")


def _frames(clips: torch.Tensor, borders: torch.Tensor | None) -> list[list[torch.Tensor]]:
    """The tiles of every clip and step, bordered."""
    n, steps = clips.shape[:2]
    if borders is None:
        borders = torch.tensor(BORDER_COLOUR).expand(n, steps, 3)
    return [[_tile(clips[i, t], borders[i, t]) for t in range(steps)] for i in range(n)]


def _side_by_side(tiles: list[list[torch.Tensor]]) -> np.ndarray:
    """(T, H, W, 3) uint8: each step's frames of every clip side by side."""
    return np.stack([_to_uint8(torch.cat([row[t] for row in tiles], dim=1)) for t in range(len(tiles[0]))])


def _encode_image(suffix: str, clips: torch.Tensor, borders: torch.Tensor | None) -> bytes:
    import imageio.v3 as iio

    tiles = _frames(clips, borders)
    if suffix == ".png":
        grid = torch.cat([torch.cat(row, dim=1) for row in tiles], dim=0)
        return iio.imwrite("<bytes>", _to_uint8(grid), extension=".png")
    return iio.imwrite("<bytes>", _side_by_side(tiles), extension=".gif", duration=FRAME_MS, loop=0)


def _write_video(tmp: Path, clips: torch.Tensor, borders: torch.Tensor | None) -> None:
    """The clips as an .mp4 through ffmpeg, which writes ``tmp`` itself (quietly: its own
    messages about a failed write would come before ours)."""
    import imageio.v3 as iio

    frames = _side_by_side(_frames(clips, borders))
    # H.264 in yuv420p wants even sizes; 16 avoids the encoder's own resizing.
    pad_h, pad_w = (-frames.shape[1]) % 16, (-frames.shape[2]) % 16
    frames = np.pad(frames, ((0, 0), (0, pad_h), (0, pad_w), (0, 0)), constant_values=255)
    iio.imwrite(tmp, frames, extension=".mp4", fps=1000 / FRAME_MS, macro_block_size=1, plugin="FFMPEG",
                ffmpeg_log_level="quiet")


def complete_mp4(path: Path) -> bool:
    """Whether ``path`` is an MP4 whose top-level boxes fill the file exactly, its index
    (``moov``) among them: what ffmpeg leaves when a write fails half-way is not."""
    size, offset, boxes = path.stat().st_size, 0, set()
    with open(path, "rb") as handle:
        while offset < size:
            handle.seek(offset)
            head = handle.read(16)
            if len(head) < 8:
                return False
            length = int.from_bytes(head[:4], "big")
            if length == 1 and len(head) == 16:  # a 64-bit size follows the type
                length = int.from_bytes(head[8:16], "big")
            elif length == 0:  # the last box runs to the end of the file
                length = size - offset
            if length < 8 or offset + length > size:
                return False
            boxes.add(head[4:8])
            offset += length
    return b"moov" in boxes


def _tile(frame: torch.Tensor, colour: torch.Tensor) -> torch.Tensor:
    """One (C, H, W) frame as an enlarged RGB (H', W', 3) tile with a 1-pixel border."""
    rgb = frame.permute(1, 2, 0)
    if rgb.shape[-1] == 1:
        rgb = rgb.expand(-1, -1, 3)
    elif rgb.shape[-1] != 3:
        rgb = rgb[..., :1].expand(-1, -1, 3)  # other channel counts: show the first one
    scale = max(1, MIN_FRAME_PIXELS // rgb.shape[0])
    rgb = rgb.repeat_interleave(scale, 0).repeat_interleave(scale, 1)
    tile = colour.view(1, 1, 3).expand(rgb.shape[0] + 2, rgb.shape[1] + 2, 3).clone()
    tile[1:-1, 1:-1] = rgb
    return tile


def _to_uint8(image: torch.Tensor) -> np.ndarray:
    return (image * 255).round().clamp(0, 255).to(torch.uint8).numpy()


def _write_vector(tmp: Path, suffix: str, clips: np.ndarray) -> None:
    n, steps, dims = clips.shape
    if suffix == ".csv":
        header = "clip,step," + ",".join(f"x{d}" for d in range(dims))
        index = np.stack(np.meshgrid(np.arange(n), np.arange(steps), indexing="ij"), -1).reshape(-1, 2)
        rows = np.concatenate([index.astype(np.float64), clips.reshape(-1, dims)], axis=1)
        with open(tmp, "w", encoding="utf-8") as handle:
            handle.write(header + "\n")
            for row in rows:
                handle.write(f"{int(row[0])},{int(row[1])}," + ",".join(f"{v:.6g}" for v in row[2:]) + "\n")
        return
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(n, 1, figsize=(8, 1.8 * n), squeeze=False, sharex=True)
    for i, axis in enumerate(axes[:, 0]):
        axis.plot(np.arange(steps), clips[i], linewidth=1)
        axis.set_ylabel(f"clip {i}")
    axes[-1, 0].set_xlabel("time step")
    figure.tight_layout()
    figure.savefig(tmp, format="png", dpi=100)
    plt.close(figure)


def prediction_borders(num_rows: int, context: int, horizon: int, truth_rows: int) -> torch.Tensor:
    """Border colours for rows of [context + horizon] frames: context frames red, the
    ground-truth rows' future blue, predicted frames white."""
    borders = torch.tensor(BORDER_COLOUR).repeat(num_rows, context + horizon, 1)
    borders[:, :context] = torch.tensor(CONTEXT_COLOUR)
    borders[:truth_rows, context:] = torch.tensor(TRUTH_COLOUR)
    return borders
