"""Frame sizes and conversions that every reader shares: ``--size``, resizing and grey.

    parse_size("64")      -> (64, 64)      a square
    parse_size("64x48")   -> (64, 48)      HEIGHTxWIDTH, in pixels
    resize_frames(frames, (64, 48))        area averaging when shrinking, bilinear when enlarging
    grey_frames(frames)                    ITU-R BT.601 luma: 0.299 R + 0.587 G + 0.114 B

Frames here are float32 ``(T, C, H, W)`` arrays.
"""

from __future__ import annotations

import re
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from vrnnkit.blocks.conv import MIN_SIDE
from vrnnkit.errors import ConfigError

LUMA = (0.299, 0.587, 0.114)
"""ITU-R BT.601 luma weights of R, G and B: what ``--grey`` and grey video reading use."""
SIZE_FORMAT = "SIZE (a square, e.g. 64) or HEIGHTxWIDTH (e.g. 64x48), in pixels"
_SIZE = re.compile(r"\s*(\d+)\s*(?:[xX×]\s*(\d+)\s*)?")


def parse_size(value: Any) -> tuple[int, int] | None:
    """``--size`` as ``(height, width)``: ``64`` or ``"64"`` is a square, ``"64x48"`` (or a
    pair) is HEIGHTxWIDTH; None stays None.

    Raises:
        ConfigError: not a size, or a side below ``MIN_SIDE`` (8), the smallest frame the conv
            blocks take.
    """
    if value is None:
        return None
    sides: tuple[Any, ...] = ()
    if isinstance(value, int) and not isinstance(value, bool):
        sides = (value, value)
    elif isinstance(value, str) and (match := _SIZE.fullmatch(value)):
        sides = (int(match[1]), int(match[2] or match[1]))
    elif isinstance(value, (list, tuple)) and len(value) == 2:
        sides = tuple(value)
    if len(sides) != 2 or not all(isinstance(side, int) and not isinstance(side, bool) for side in sides):
        raise ConfigError(f"--size {_shown(value)}: expected {SIZE_FORMAT}")
    height, width = sides
    if min(height, width) < MIN_SIDE:
        raise ConfigError(
            f"--size {_shown(value)}: frames must be at least {MIN_SIDE}x{MIN_SIDE} pixels, the smallest "
            f"the conv blocks take (MIN_SIDE = {MIN_SIDE}); expected {SIZE_FORMAT}"
        )
    return height, width


def format_size(size: tuple[int, int]) -> str:
    """``(64, 48)`` -> ``"64x48"``: how ``--size`` is written back (HEIGHTxWIDTH)."""
    return f"{size[0]}x{size[1]}"


def _shown(value: Any) -> str:
    if isinstance(value, (list, tuple)):
        return "x".join(str(side) for side in value) or repr(value)
    return str(value) if str(value).strip() else repr(value)


def resize_frames(frames: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """``(T, C, H, W)`` float32 frames at ``size`` ``(height, width)``.

    Shrinking (neither side grows) averages over each output pixel's area
    (``interpolate(mode="area")``), so thin lines and fine texture keep their mean brightness;
    enlarging, on either side, is bilinear (antialiased along a side that shrinks). Values
    stay within the input's range."""
    height, width = frames.shape[-2:]
    if (height, width) == tuple(size):
        return frames
    tensor = torch.from_numpy(np.ascontiguousarray(frames, dtype=np.float32))
    if size[0] <= height and size[1] <= width:
        resized = F.interpolate(tensor, size=tuple(size), mode="area")
    else:
        resized = F.interpolate(tensor, size=tuple(size), mode="bilinear", align_corners=False, antialias=True)
    return resized.numpy()


def grey_frames(frames: np.ndarray) -> np.ndarray:
    """``(T, C, H, W)`` frames as ``(T, 1, H, W)`` grey: luma (``LUMA``) of RGB, RGBA's alpha
    dropped; grey (+ alpha) keeps its grey channel."""
    channels = frames.shape[1]
    if channels < 3:
        return frames[:, :1]
    weights = np.asarray(LUMA, dtype=np.float32)
    return np.tensordot(weights, frames[:, :3], axes=([0], [1]))[:, None].astype(np.float32, copy=False)
