"""What the model checks and reads of its inputs: batches of frames, step masks, and what the
encoder reads of each frame (the frame, or with ``frame_difference`` the frame and its change
from the previous one; see docs/model.md, "Frame differences")."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from vrnnkit.errors import ConfigError, DataError


def check_frames(frame_shape: tuple[int, ...], x: Any, name: str) -> tuple[int, int]:
    """(batch, time) of ``x``, which must be a float tensor (B, T, *frame_shape)."""
    shape = tuple(frame_shape)
    if not isinstance(x, Tensor):
        raise DataError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
    if x.dim() != 2 + len(shape) or tuple(x.shape[2:]) != shape or x.shape[0] < 1 or x.shape[1] < 1:
        raise DataError(
            f"{name} must have shape (batch, time, {', '.join(map(str, shape))}) for this model, "
            f"got {tuple(x.shape)}"
        )
    if not x.is_floating_point():
        raise DataError(f"{name} must hold floating-point values, got dtype {x.dtype}")
    return x.shape[0], x.shape[1]


def check_mask(mask: Tensor | None, batch: int, steps: int, like: Tensor) -> Tensor | None:
    """A (batch, time) step mask in the dtype of ``like``, or None."""
    if mask is None:
        return None
    if tuple(mask.shape) != (batch, steps):
        raise DataError(f"mask must have shape (batch, time) = {(batch, steps)}, got {tuple(mask.shape)}")
    return mask.to(like.dtype)


def encoder_input_shape(frame_shape: tuple[int, ...], frame_difference: bool) -> tuple[int, ...]:
    """The shape of what phi_x reads per frame: the frame's, with the channels (or the vector)
    doubled for ``frame_difference``."""
    return (2 * frame_shape[0], *frame_shape[1:]) if frame_difference else tuple(frame_shape)


def encoder_input(frames: Tensor, previous: Tensor | None, frame_difference: bool) -> Tensor:
    """What phi_x reads of ``frames`` (N, *frame): the frames themselves, or with
    ``frame_difference`` the frames and their change from ``previous`` (None: zeros) on the
    channel (or vector) axis."""
    if not frame_difference:
        return frames
    change = frames if previous is None else frames - previous
    return torch.cat([frames, change], dim=1)


def previous_frames(x: Tensor) -> Tensor:
    """The frame before each frame of ``x`` (B, T, ...): zeros, then ``x[:, :-1]``."""
    return torch.cat([torch.zeros_like(x[:, :1]), x[:, :-1]], dim=1)


FEEDBACK = ("mean", "draw")


def check_feedback(feedback: str | None) -> None:
    """``feedback`` names what generation feeds back: "mean", "draw", or None (the frame returned)."""
    if feedback is not None and feedback not in FEEDBACK:
        raise ConfigError(f"--feedback must be one of {', '.join(FEEDBACK)}, got {feedback!r}")


def sample_feedback(model: Any) -> str | None:
    """What sampling from the prior feeds back unless told: the likelihood block's
    ``sample_feedback`` ("draw" for the Bernoulli likelihoods; None, the frame shown, otherwise)."""
    return getattr(model.likelihood, "sample_feedback", None)


def feeds_draw(feedback: str | None, mean: bool) -> bool:
    """Whether generation feeds a draw from the likelihood back into the state (``feedback``
    "draw"), its mean ("mean"), or the frame it returns (None: a draw unless ``mean``)."""
    check_feedback(feedback)
    return not mean if feedback is None else feedback == "draw"
