"""Decode ``.gif`` and ``.mp4`` files frame by frame, resizing and converting each frame as it
is read, so that a long full-HD clip never sits in memory at full resolution.

    frames = read_video(Path("clip.mp4"), grey=True, size=(64, 64))   # (T, 64, 64) uint8

The frame size and count are read from the file's metadata first where it has them; a clip
whose full-size frames would not fit in ``FULL_SIZE_LIMIT`` bytes asks for ``--size`` before
decoding anything.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from pathlib import Path

import imageio.v3 as iio
import numpy as np

from vrnnkit.data.frames import grey_frames, resize_frames
from vrnnkit.errors import DataError
from vrnnkit.resources.budget import available_memory, require_memory

FULL_SIZE_LIMIT = 4 * 2**30
"""Bytes of decoded frames a video may take at full size (no ``--size``) before it is refused."""
MAX_FRAME_PIXELS = 7680 * 4320
"""The largest frame decoded (8K UHD): a larger one is refused from the file's metadata, before
decoding, or as soon as it is decoded where the metadata did not tell (a decompression bomb)."""
# Lossy codecs (mp4) leave grey video with channels a few levels apart.
GREY_TOLERANCE = 3


def video_frames(path: Path) -> Iterator[np.ndarray]:
    """The frames of a video as ``(H, W, 3)`` uint8 arrays, decoded one at a time."""
    # Pillow decodes gif frames to a palette or RGBA unless asked for RGB; ffmpeg gives RGB.
    options = {"mode": "RGB"} if path.suffix.lower() == ".gif" else {}
    return iio.imiter(path, **options)


def probe(path: Path) -> tuple[int | None, int, int] | None:
    """``(frames, height, width)`` from the file's metadata, without decoding the frames
    (frames None where the metadata has no count or duration); None when it cannot tell."""
    try:
        if path.suffix.lower() == ".gif":
            from PIL import Image

            with warnings.catch_warnings():
                warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # vrnnkit's own limit follows
                try:
                    image = Image.open(path)
                except Image.DecompressionBombError:
                    return None, MAX_FRAME_PIXELS + 1, 1  # beyond Pillow's limit, so beyond ours
                with image:
                    return int(getattr(image, "n_frames", 1)), image.height, image.width
        meta = iio.immeta(path, plugin="FFMPEG")
        width, height = meta["size"]
        count = meta.get("nframes")
        if not isinstance(count, int):
            count = round(meta["fps"] * meta["duration"]) if meta.get("fps") and meta.get("duration") else None
        return count, int(height), int(width)
    except Exception:  # no or odd metadata: decoding tells what is wrong with the file
        return None


def read_video(path: Path, *, grey: bool | None = None, size: tuple[int, int] | None = None) -> np.ndarray:
    """Every frame of a video as uint8 ``(T, H, W, 3)``, or ``(T, H, W)`` read as grey, each
    frame converted (``grey``) and resized (``size``, HEIGHTxWIDTH) as soon as it is decoded.

    ``grey``: True reads luma, False keeps RGB, None reads grey when the three channels agree
    (within 3/255, for lossy mp4)."""
    _check_full_size(path, size)
    frames: list[np.ndarray] = []
    spread, most = 0, None
    try:
        for frame in video_frames(path):
            frame = np.asarray(frame)
            if frame.ndim != 3 or frame.shape[-1] != 3:
                raise DataError(f"{path}: expected RGB frames, decoded a frame of shape {frame.shape}")
            _check_frame(path, frame.shape[0], frame.shape[1])
            most = most or _frames_that_fit(size or frame.shape[:2])
            if len(frames) >= most:
                raise DataError(f"{path}: decoded {len(frames):,} frames, as many as fit in the memory available "
                                f"at {_size_words(size or frame.shape[:2])} and more follow; pass a smaller --size, or cut the clip")
            if grey is None:
                spread = max(spread, int((frame.max(axis=-1).astype(np.int16) - frame.min(axis=-1)).max()))
            frames.append(_convert(frame, grey=bool(grey), size=size))
    except DataError:
        raise
    except Exception as err:  # decoders raise many types (OSError, SyntaxError, RuntimeError, ...)
        raise DataError(
            f"{path}: expected a readable {path.suffix} video, found a corrupt or unsupported "
            f"file ({one_line(err)})"
        ) from err
    if not frames:
        raise DataError(f"{path}: expected video frames, decoded none")
    odd = next((i for i, frame in enumerate(frames) if frame.shape != frames[0].shape), None)
    if odd is not None:  # a damaged or unusual file (a GIF's frames may differ in size)
        raise DataError(f"{path}: frame {odd} is {frames[odd].shape[1]}x{frames[odd].shape[0]} pixels and frame 0 "
                        f"{frames[0].shape[1]}x{frames[0].shape[0]}; expected frames of one size (or pass --size)")
    video = np.stack(frames)
    if grey is None and spread <= GREY_TOLERANCE:
        video = _convert_all(video)
    return video


def _convert(frame: np.ndarray, *, grey: bool, size: tuple[int, int] | None) -> np.ndarray:
    """One ``(H, W, 3)`` uint8 frame as uint8 ``(h, w)`` grey or ``(h, w, 3)``."""
    if not grey and (size is None or tuple(size) == frame.shape[:2]):
        return frame
    values = frame.transpose(2, 0, 1)[None].astype(np.float32)  # (1, 3, H, W)
    if grey:
        values = grey_frames(values)
    if size is not None:
        values = resize_frames(values, size)
    values = np.clip(np.rint(values[0]), 0, 255).astype(np.uint8)
    return values[0] if grey else values.transpose(1, 2, 0)


def _convert_all(video: np.ndarray) -> np.ndarray:
    """``(T, H, W, 3)`` uint8 frames whose channels agree, as ``(T, H, W)`` luma."""
    return np.stack([_convert(frame, grey=True, size=None) for frame in video])


def _check_full_size(path: Path, size: tuple[int, int] | None) -> tuple[int | None, int, int] | None:
    """Refuse, from the metadata, frames too large to decode and clips too long to keep;
    the metadata's ``(frames, height, width)`` (None where it does not tell)."""
    found = probe(path)
    if found is None:
        return None
    count, height, width = found
    _check_frame(path, height, width)
    if count is None:
        return found
    if size is not None:
        require_memory(count * size[0] * size[1] * 3, f"{path}: {count:,} frames at {_size_words(size)}", DataError,
                       purpose="in memory", fix="pass a smaller --size, or cut the clip")
        return found
    needed = count * height * width * 3
    if needed > FULL_SIZE_LIMIT:
        raise DataError(
            f"{path}: {count} frames of {height}x{width} would take {needed / 2**30:.1f} GiB in memory at "
            f"full size; pass --size (e.g. --size 64 or --size 64x{max(8, round(64 * width / height))}, "
            "HEIGHTxWIDTH) to resize each frame as it is read"
        )
    require_memory(needed, f"{path}: {count:,} frames of {height}x{width}", DataError, purpose="in memory",
                   fix="pass --size to resize each frame as it is read")
    return found


def frame_size(path: Path, size: tuple[int, int] | None) -> tuple[int, int] | None:
    """The ``(height, width)`` a video's frames have once read (``size``, or the metadata's,
    checked against ``MAX_FRAME_PIXELS``), without decoding any; None when the metadata does not tell."""
    found = probe(path)
    if found is None:
        return size
    _check_frame(path, found[1], found[2])
    return size or (found[1], found[2])


def _check_frame(path: Path, height: int, width: int) -> None:
    if height * width > MAX_FRAME_PIXELS:
        shown = f"of {height}x{width} pixels" if width > 1 else "beyond Pillow's own limit"
        raise DataError(
            f"{path}: frames {shown}, larger than vrnnkit decodes (8K UHD, 7680x4320 = "
            f"{MAX_FRAME_PIXELS:,} pixels; frames this large in a small file are the mark of a decompression bomb); "
            "resize the video with another tool first"
        )


def _frames_that_fit(size: tuple[int, int]) -> int:
    """How many frames of ``size`` the memory available holds (3 bytes a pixel, twice: the
    frames read and the array stacked from them): the bound on decoding a clip whose metadata
    gives no frame count, or a false one."""
    available = available_memory()
    return max(1, available // (size[0] * size[1] * 6)) if available is not None else 2**62


def _size_words(size: tuple[int, int]) -> str:
    return f"{size[0]}x{size[1]}"


def one_line(err: BaseException, limit: int = 300) -> str:
    """A decoder's error on one line: its first and last lines (ffmpeg adds a page of banner)."""
    lines = [line.strip() for line in str(err).splitlines() if line.strip()]
    if not lines:
        return type(err).__name__
    text = lines[0] if len(lines) == 1 else f"{lines[0]} ... {lines[-1]}"
    return text if len(text) <= limit else text[: limit - 3] + "..."
