"""Skip connections: which frame's feature maps a skip decoder sees at each step.

A skip decoder (``uses_skips = True``, e.g. ``convT-skip``) decodes x_t from
``(phi_z(z_t), h_{t-1})`` and the *reference* of step t: a frame together with the feature maps
a skip encoder (``provides_skips = True``, e.g. ``conv-skip``) computes from it. Appearance then
reaches the decoder directly, and the latent path carries motion and uncertainty (SVG, Denton &
Fergus 2018).

The rule, the same while training, filtering, predicting and sampling, with N =
``VRNNConfig.skip_context``:

- N = 0 (default): the reference of step t is frame t-1, observed while filtering and generated
  while predicting or sampling.
- N > 0: frame t-1 up to frame N-1, then frame N-1 held (SVG's rule). When predicting from C
  context frames, the last context frame is held, whatever N.
- Step 0 has no previous frame: its reference is all zeros (so is an unconditional sample's).

A reference is a list of tensors: the frame itself, then the encoder's maps, each batch-first;
for a decoder that reads motion (``reads_motion``, e.g. ``convT-warp`` with ``motion = true``),
last the motion from the frame before to this one (``vrnnkit.blocks.motion``, zeros where there
is no frame before).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from vrnnkit.blocks.motion import lucas_kanade
from vrnnkit.errors import ConfigError


def skip_arguments(encoder: nn.Module, decoder_builder: object, encoder_name: str, decoder_name: str) -> dict:
    """What the model passes a decoder for its skips: ``{"skip_shapes": ...}`` or nothing."""
    if not getattr(decoder_builder, "uses_skips", False):
        return {}
    if not getattr(encoder, "provides_skips", False):
        raise missing_maps(decoder_name, encoder_name)
    return {"skip_shapes": [tuple(s) for s in encoder.skip_shapes]}


def missing_maps(decoder_name: str, encoder_name: str) -> ConfigError:
    """The error for a skip decoder paired with an encoder that gives no feature maps."""
    return ConfigError(
        f"decoder {decoder_name!r} needs the feature maps of a skip encoder, but encoder "
        f"{encoder_name!r} gives none; use an encoder that provides them (e.g. 'conv-skip')"
    )


def reference_index(steps: int, hold: int) -> list[int]:
    """For each step t, the index of its reference frame (-1: none, zeros)."""
    return [t - 1 if hold == 0 else min(t - 1, hold - 1) for t in range(steps)]


def gather(maps: list[Tensor], steps: int, hold: int) -> list[Tensor]:
    """Each step's reference from the maps of every frame, (B*T, ...) per level, time inner."""
    index = torch.tensor(reference_index(steps, hold), device=maps[0].device) + 1
    out = []
    for level in maps:
        level = level.view(-1, steps, *level.shape[1:])
        padded = torch.cat([torch.zeros_like(level[:, :1]), level], dim=1)
        out.append(padded.index_select(1, index).flatten(0, 1))
    return out


def zeros(shapes: list[tuple[int, ...]], batch: int, like: Tensor) -> list[Tensor]:
    """The reference of a step with no frame before it."""
    return [like.new_zeros(batch, *shape) for shape in shapes]


def repeat(maps: list[Tensor] | None, n: int) -> list[Tensor] | None:
    """``n`` copies of a batch of references, stacked like ``Tensor.repeat`` stacks frames."""
    return None if maps is None else [m.repeat(n, *([1] * (m.dim() - 1))) for m in maps]


def last_frame(maps: list[Tensor] | None, batch: int, steps: int, samples: int) -> list[Tensor] | None:
    """The last frame's reference of each sequence, repeated for ``samples`` futures each."""
    if maps is None:
        return None
    return [m.view(batch, steps, *m.shape[1:])[:, -1].repeat_interleave(samples, dim=0) for m in maps]


def motion(frames: Tensor, previous: Tensor | None, reads_motion: bool, steps: int | None = None) -> list[Tensor]:
    """The motion part of a reference: ``[]`` unless ``reads_motion``, else the backward flow
    (N, 2, H, W) from each of ``frames`` to its ``previous`` frame, a fixed estimate with no
    gradient. No frame before (``previous`` None, or the first of each sequence of ``steps``
    frames, time inner): zeros."""
    if not reads_motion:
        return []
    if previous is None:
        return [frames.new_zeros(frames.shape[0], 2, *frames.shape[-2:])]
    flow = lucas_kanade(previous.detach(), frames.detach())
    if steps is not None:
        flow = flow.view(-1, steps, *flow.shape[1:]).index_fill(1, torch.tensor([0], device=flow.device), 0.0).flatten(0, 1)
    return [flow]


def motion_shapes(frame_shape: tuple[int, ...], reads_motion: bool) -> list[tuple[int, ...]]:
    """The shape of a reference's motion part: none, or (2, H, W)."""
    return [(2, *frame_shape[1:])] if reads_motion else []
