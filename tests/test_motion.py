"""The classical motion estimate (Lucas-Kanade) that ``convT-warp`` with ``motion = true`` reads."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from vrnnkit.blocks.motion import lucas_kanade
from vrnnkit.blocks.warp import warp


def _texture(shape, seed=0, dtype=torch.float64) -> torch.Tensor:
    """A smooth random image spanning [0, 1] (N, C, H, W): noise blurred, then stretched."""
    noise = torch.rand(shape, generator=torch.Generator().manual_seed(seed), dtype=dtype)
    smooth = F.avg_pool2d(F.pad(noise.flatten(0, -3).unsqueeze(1), (2, 2, 2, 2), mode="replicate"), 5, stride=1).view(shape)
    low, high = smooth.amin(dim=(-2, -1), keepdim=True), smooth.amax(dim=(-2, -1), keepdim=True)
    return (smooth - low) / (high - low)


@pytest.mark.parametrize(("dx", "dy"), [(1.5, -0.7), (-3.2, 2.4), (0.3, 0.0)])
def test_a_translated_texture_gives_its_displacement(dx, dy):
    frame = _texture((2, 1, 48, 40))
    flow = torch.zeros(2, 2, 48, 40, dtype=torch.float64)
    flow[:, 0], flow[:, 1] = dx, dy
    previous = frame
    now = warp(previous, -flow)  # now(x) = previous(x - d): the scene moved by d ...
    estimate = lucas_kanade(previous, now)  # ... so previous(x + e) = now(x) with e = -d
    inner = estimate[..., 8:-8, 8:-8]
    assert torch.allclose(inner[:, 0].median(), torch.tensor(-dx, dtype=inner.dtype), atol=0.15)
    assert torch.allclose(inner[:, 1].median(), torch.tensor(-dy, dtype=inner.dtype), atol=0.15)
    # carried on at constant velocity, the estimate predicts the next frame better than copying
    upcoming = warp(now, -flow)
    assert (warp(now, estimate) - upcoming)[..., 8:-8, 8:-8].abs().mean() < 0.3 * (now - upcoming)[..., 8:-8, 8:-8].abs().mean()


def test_still_frames_give_exactly_zero_motion():
    frame = _texture((3, 1, 16, 20), dtype=torch.float32)
    assert torch.equal(lucas_kanade(frame, frame), torch.zeros(3, 2, 16, 20))
    flat = torch.full((1, 1, 12, 12), 0.4)  # no texture at all: nothing to divide by zero
    assert torch.equal(lucas_kanade(flat, flat), torch.zeros(1, 2, 12, 12))


def test_colour_is_read_as_its_grey_average_and_any_size_works():
    grey = _texture((1, 1, 20, 33), seed=1)
    moved = warp(grey, torch.full((1, 2, 20, 33), 0.8, dtype=torch.float64))
    colour = lucas_kanade(grey.expand(-1, 3, -1, -1), moved.expand(-1, 3, -1, -1))
    assert colour.shape == (1, 2, 20, 33)
    assert torch.allclose(colour, lucas_kanade(grey, moved))
    tiny = lucas_kanade(grey[..., :6, :7], moved[..., :6, :7])  # below a pyramid level's size
    assert tiny.shape == (1, 2, 6, 7) and torch.isfinite(tiny).all()


def test_the_model_reads_the_motion_into_each_reference_frame_and_none_into_the_first():
    from vrnnkit import VRNN, VRNNConfig

    config = VRNNConfig(
        frame_shape=(1, 16, 16), h_dim=16, z_dim=3, encoder="conv-skip", decoder="convT-warp", likelihood="gaussian",
        frame_difference=False, encoder_options={"channels": 4}, decoder_options={"channels": 4, "motion": True},
    )
    model = VRNN(config).double()
    assert model.reads_motion and model.reads_previous and model.reference_shapes()[-1] == (2, 16, 16)
    x = _texture((2, 4, 16, 16)).unsqueeze(2)
    _, maps = model.encode(x)
    motion = maps[-1].view(2, 4, 2, 16, 16)
    assert torch.equal(motion[:, 0], torch.zeros(2, 2, 16, 16))
    for t in range(1, 4):  # the batched pass equals the one-frame step
        _, reference = model.encode_frame(x[:, t], x[:, t - 1])
        assert torch.allclose(reference[-1], motion[:, t], atol=1e-12)
        assert torch.allclose(motion[:, t], lucas_kanade(x[:, t - 1], x[:, t]), atol=1e-12)
