"""A motion-compensated decoder: the next frame as the reference frame moved along a predicted
displacement field, blended with new content where the reference cannot explain it.

``convT-warp`` is ``convT-skip`` (a U-Net over the reference frame's feature maps) whose last
convolution gives, per pixel, a displacement ``(dx, dy)`` in pixels, a blend logit, an image of
new content and the likelihood's other parameters (a Gaussian's scale); a linear map of
``(phi_z(z_t), h_{t-1})`` adds one displacement shared by the whole frame. The frame's mean is

    warped = reference sampled bilinearly at (x + dx, y + dy)        (backward warping)
    mean   = warped + g * sigmoid(blend) * (content - warped)

with ``g`` one learned scalar that starts at 0. Every output starts at zero, so an untrained
model predicts exactly its reference frame (copy-last) and learns motion from there. The
reference is the previous frame (``skip_context = 0``): the observed one while filtering, the
generated one while predicting; with ``skip_context = N`` the displacement is from frame N-1.

With ``motion = true`` the decoder also reads the motion from the frame before the reference
to the reference (``vrnnkit.blocks.motion``: a classical Lucas-Kanade estimate, no parameters)
as the last of its feature maps, and adds ``pace * motion`` to the displacement, ``pace`` one
number per frame from ``(phi_z(z_t), h_{t-1})`` (starting at 0): carrying on at the speed seen,
or half of it, or stopping, is one latent choice, and the convolutions refine it per pixel.

The warp forms only the mean; the model reads it through the likelihood's ``frame_params``, so
the probability model, its bounds and its samples stay what they are for any decoder. What it
cannot do: bring in what the reference does not hold (disocclusions, things entering the
frame) except through the blended content, and follow a cut (a new shot), where the blend has
to replace the whole frame.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from vrnnkit.blocks.conv import ConvTransposeSkipDecoder
from vrnnkit.registry import register

FLOW_CHANNELS = 2
BLEND_CHANNELS = 1


def warp(frame: Tensor, flow: Tensor) -> Tensor:
    """``frame`` (N, C, H, W) sampled bilinearly at each pixel moved by ``flow`` (N, 2, H, W),
    ``(dx, dy)`` in pixels; positions outside the frame read its border.

    Written with ``floor`` and ``gather`` rather than ``grid_sample``: at a displacement of
    exactly zero the weights are exactly 0 and 1, so a zero flow returns ``frame`` bit for bit
    (grid_sample's normalised coordinates are off by rounding, up to 2e-5 at 144x176 in float32,
    which repeated warping would compound). It runs on any device and exports to ONNX.
    """
    n, c, height, width = frame.shape
    rows = torch.arange(height, device=frame.device, dtype=frame.dtype).view(1, height, 1)
    cols = torch.arange(width, device=frame.device, dtype=frame.dtype).view(1, 1, width)
    y = (rows + flow[:, 1]).clamp(0, height - 1)
    x = (cols + flow[:, 0]).clamp(0, width - 1)
    y0, x0 = y.floor(), x.floor()
    wy, wx = (y - y0).unsqueeze(1), (x - x0).unsqueeze(1)
    top, left = y0.long(), x0.long()
    bottom, right = (top + 1).clamp(max=height - 1), (left + 1).clamp(max=width - 1)
    flat = frame.reshape(n, c, height * width)

    def read(r: Tensor, q: Tensor) -> Tensor:
        index = (r * width + q).view(n, 1, height * width).expand(n, c, height * width)
        return flat.gather(2, index).view(n, c, height, width)

    upper = read(top, left) + wx * (read(top, right) - read(top, left))
    lower = read(bottom, left) + wx * (read(bottom, right) - read(bottom, left))
    return upper + wy * (lower - upper)


@register("decoder", "convT-warp")
class WarpDecoder(ConvTransposeSkipDecoder):
    """``convT-skip`` whose output moves the reference frame (see the module docstring).

    Called as ``(f, h, maps, frame)`` with ``frame`` the reference frame (N, C, H, W); returns
    ``(mean, rest)``: the frame's mean (N, C, H, W) and the likelihood's other parameters
    (N, P - 1, C, H, W), which the model adds to ``likelihood.frame_params(mean)``.
    """

    warps_reference = True

    @classmethod
    def block_name(cls) -> str:
        return "convT-warp"

    def __init__(
        self, latent_dim: int, h_dim: int, frame_shape: tuple[int, ...], params_per_element: int, stay: bool = True,
        motion: bool = False, **options,
    ) -> None:
        self.reads_motion = bool(motion)
        if self.reads_motion and options.get("skip_shapes"):  # the motion field joins the full-size maps
            options["skip_shapes"] = [*options["skip_shapes"], (FLOW_CHANNELS, *frame_shape[1:])]
        super().__init__(latent_dim, h_dim, frame_shape, params_per_element, **options)
        last = self.deconvs[-1]
        channels = frame_shape[0]
        self.params_per_element, self.stay = params_per_element, bool(stay)
        masks = BLEND_CHANNELS + int(self.stay)
        head = nn.Conv2d(last.in_channels, FLOW_CHANNELS + masks + params_per_element * channels, 3, padding=1)
        nn.init.zeros_(head.weight)  # every output 0: no motion, no blend, the scale at its floor's offset
        nn.init.zeros_(head.bias)
        self.deconvs[-1] = head.to(memory_format=torch.channels_last)
        # A shortcut from the latent and the state to one displacement for the whole frame: a
        # camera's pan or a dashcam's drift is one (dx, dy), and a short path from z to it lets
        # a drawn latent choose how the scene moves.
        self.shift = nn.Linear(latent_dim + h_dim, FLOW_CHANNELS)
        nn.init.zeros_(self.shift.weight)
        nn.init.zeros_(self.shift.bias)
        self.gate = nn.Parameter(torch.zeros(()))
        if self.reads_motion:  # how far to carry on along the motion seen, per frame
            self.pace = nn.Linear(latent_dim + h_dim, 1)
            nn.init.zeros_(self.pace.weight)
            nn.init.zeros_(self.pace.bias)

    def forward(self, f: Tensor, h: Tensor, skips: list[Tensor] | None = None, frame: Tensor | None = None) -> tuple[Tensor, Tensor]:
        if skips is None or frame is None:
            raise ValueError("decoder 'convT-warp' needs the reference frame and its feature maps")
        out = self.output_maps(f, h, skips)
        channels = frame.shape[1]
        flow, blend, stay, content, rest = out.split(
            [FLOW_CHANNELS, BLEND_CHANNELS, int(self.stay), channels, (self.params_per_element - 1) * channels], dim=1
        )
        state = torch.cat([f, h], dim=-1)
        flow = flow + self.shift(state)[:, :, None, None]
        if self.reads_motion:  # the motion field is the last map (vrnnkit.model.skips)
            flow = flow + self.pace(state)[:, :, None, None] * skips[-1]
        moved = warp(frame, flow)
        if self.stay:  # where nothing moves, the reference itself, not a resampled (softened) copy
            moved = moved + torch.sigmoid(stay) * (frame - moved)
        mean = moved + (self.gate * torch.sigmoid(blend)) * (content - moved)
        return mean, rest.reshape(out.shape[0], self.params_per_element - 1, *frame.shape[1:])
