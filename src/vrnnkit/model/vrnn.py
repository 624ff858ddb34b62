"""The Variational Recurrent Neural Network (Chung et al. 2015, arXiv 1506.02216).

One time step, with the paper's equation numbers:

    e_t              = phi_x(x_t)                          encoder
    p(z_t | h_{t-1}) = N(prior(h_{t-1}))                   eq. 5
    q(z_t | x_t, ·)  = N(posterior(e_t, h_{t-1}))          eq. 9
    f_t              = phi_z(z_t),  z_t ~ q                reparameterised
    p(x_t | z_t, ·)  = likelihood(decoder(f_t, h_{t-1}))   eq. 6
    h_t              = rnn([e_t, f_t], h_{t-1})            eq. 7
    ELBO             = sum_t log p(x_t | ·) - KL(q || p)   eq. 11

Only the recurrent path (posterior, sample, phi_z, rnn) depends on earlier steps, so only it
runs inside the time loop (``filter``). phi_x runs once over every frame before the loop;
the prior, the decoder and the likelihood run once over every step after it. Generation is
the exception: a generated frame feeds back into phi_x, so there the whole step is in the loop
(``generate``).

An optional input u_t per step (an action; ``config.action_dim`` > 0) enters the prior, the
posterior, the recurrence and the decoder through an embedding a_t computed off the loop:
``vrnnkit.model.actions`` says where, and why the fused loop needs no change for it.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor, nn

import vrnnkit.model.generation as generation
import vrnnkit.model.inputs as inputs
import vrnnkit.model.skips as skips
from vrnnkit.blocks.base import posterior_inputs
from vrnnkit.blocks.distributions import randn
from vrnnkit.errors import ConfigError
from vrnnkit.model.actions import ActionInput, check_actions, reads_actions
from vrnnkit.model.config import VRNNConfig
from vrnnkit.model.fused import Resampler, fused_filter, fused_filter_supported
from vrnnkit.model.masking import zero_padding
from vrnnkit.model.objective_registry import DEFAULT_THRESHOLD, get_objective
from vrnnkit.model.outputs import Filtered, VRNNOutput
from vrnnkit.registry import get_builder


class VRNN(nn.Module):
    """A VRNN built from registered blocks, as ``config`` names them.

    Whole batches: ``forward`` (a training objective), ``log_likelihood`` (the IWAE bound),
    ``sample`` and ``predict``. The step-level interface that objectives, evaluation, export
    and training compose, every shape batch-first unless said:

    - ``checked_batch`` checks a batch and its mask; ``encode`` runs phi_x over every frame
      and ``references`` gives each step's skip reference;
    - ``noise`` draws the posterior noise and ``filter`` runs the time loop (the posterior,
      a draw of z_t, phi_z, the recurrence) into a ``Filtered`` path;
    - ``prior_params`` is the prior over every step, ``decode`` the likelihood's parameters,
      ``log_prob_frames`` scores frames under the likelihood;
    - ``filter_step``, ``generate_step`` and ``encode_frame`` are one step of each (the
      exported graphs); ``generate`` rolls the prior forward from a state.
    """

    fused_loop: bool = True
    """Use the hand-written backward pass of ``vrnnkit.model.fused`` where the blocks allow it."""
    _compiled_step: Callable[..., Any] | None = None
    cpu_chunk_elements: int = 1 << 18
    """On the CPU, the batched encoder and decoder run over chunks of frames of about this many
    values (64 frames at 64x64); see ``_frame_chunk``."""

    def __init__(self, config: VRNNConfig) -> None:
        super().__init__()
        if config.frame_shape is None:
            raise ConfigError("the config has no frame_shape; set one (VRNNConfig.with_frame_shape) to build a VRNN")
        self.config = config
        c = config
        # With inputs, the posterior and the recurrence read [e_t, a_t]; a prior or decoder that
        # reads_actions is built with the embedding's width (vrnnkit.model.actions).
        acting = c.action_dim > 0
        width = c.feature_dim + (c.action_embedding if acting else 0)
        read = {kind: acting and reads_actions(get_builder(kind, getattr(c, kind))) for kind in ("prior", "decoder")}
        embedding = {kind: {"action_dim": c.action_embedding} if read[kind] else {} for kind in read}
        self.likelihood = c.build_block("likelihood", **c.likelihood_arguments)
        self.encoder = c.build_block("encoder", frame_shape=self.encoder_input_shape, out_dim=c.feature_dim)
        self.prior = c.build_block("prior", h_dim=c.h_dim, z_dim=c.z_dim, **embedding["prior"])
        self.posterior = c.build_block("posterior", feature_dim=width, h_dim=c.h_dim, z_dim=c.z_dim)
        self.phi_z = nn.Sequential(nn.Linear(c.z_dim, c.latent_feature_dim), nn.ReLU())
        skip_shapes = skips.skip_arguments(self.encoder, get_builder("decoder", c.decoder), c.encoder, c.decoder)
        self.uses_skips = bool(skip_shapes)
        self.warps_reference = bool(getattr(get_builder("decoder", c.decoder), "warps_reference", False))
        if self.uses_skips and c.skip_residual and not self.warps_reference:
            # ReZero-style gate, one per likelihood parameter: at zero the model starts out as
            # the copy of its reference frame, and learns how far to move away from it.
            shape = (1, self.likelihood.params_per_element) + (1,) * len(c.frame_shape)
            self.residual_gate = nn.Parameter(torch.zeros(shape))
        self.decoder = c.build_block("decoder", latent_dim=c.latent_feature_dim, h_dim=c.h_dim, frame_shape=c.frame_shape,
                                     params_per_element=self.likelihood.params_per_element, **skip_shapes, **embedding["decoder"])
        self.reads_motion = bool(getattr(self.decoder, "reads_motion", False)) and self.uses_skips
        self.reads_previous = bool(c.frame_difference) or self.reads_motion
        self.rnn = c.build_block("rnn", feature_dim=width, latent_dim=c.latent_feature_dim, hidden_size=c.h_dim,
                                 num_layers=c.rnn_layers)
        self.action_input = ActionInput(c.action_dim, c.action_embedding, c.h_dim, fold_prior=not read["prior"],
                                        fold_decoder=not read["decoder"]) if acting else None

    # ------------------------------------------------------------------ training objective

    def forward(
        self,
        x: Tensor,
        *,
        mask: Tensor | None = None,
        kl_weight: float = 1.0,
        free_bits: float = 0.0,
        generator: torch.Generator | None = None,
        objective: str = "elbo",
        particles: int = 1,
        resample_threshold: float = DEFAULT_THRESHOLD,
        gradient: str = "reparam",
        actions: Tensor | None = None,
    ) -> VRNNOutput:
        """The negative ELBO of a batch ``x`` of shape (B, T, *frame_shape) (or another bound: ``objective``).

        ``mask`` (B, T) marks the observed steps of padded sequences (1 observed, 0 padding);
        a padded frame may hold anything, NaN included: it is zeroed before encoding and left
        out of every sum. ``kl_weight`` scales the KL in the loss (KL annealing); ``free_bits`` is a
        floor, in nats, on each step's batch-mean KL in the loss (steps below it get no push towards
        the prior). ``objective``: ``elbo`` (the KL in closed form), or ``iwae`` or ``fivo`` over
        ``particles`` latent paths per sequence (``vrnnkit.model.objectives``, looked up by name in
        ``vrnnkit.model.objective_registry``); ``gradient="dreg"``: IWAE's doubly reparameterised gradient.
        ``actions`` (B, T, A): the inputs u_t of a model with inputs (``action_dim`` > 0), padding ignored.
        """
        x, step_mask = self.checked_batch(x, mask)
        actions = self.checked_actions(actions, *x.shape[:2], step_mask, x)
        figures = get_objective(objective, gradient).output
        return figures(self, x, step_mask, latent_weight=kl_weight, free_bits=free_bits, particles=particles,
                       threshold=resample_threshold, generator=generator, gradient=gradient, actions=actions)

    # ------------------------------------------------------------------ evaluation

    @torch.no_grad()
    def log_likelihood(
        self,
        x: Tensor,
        k: int = 100,
        *,
        chunk_size: int | None = None,
        mask: Tensor | None = None,
        generator: torch.Generator | None = None,
        actions: Tensor | None = None,
    ) -> Tensor:
        """The importance-weighted lower bound on log p(x) with ``k`` samples, per sequence (B,).

        Each sample is a whole latent trajectory drawn from q with its own recurrent state;
        ``log w = sum_t [log p(x_t | ·) + log p(z_t | h_{t-1}) - log q(z_t | ·)]`` and the bound
        is ``logsumexp_k(log w) - log k``. k=1 is the ELBO in expectation; the bound tightens
        towards log p(x) as k grows. Samples are processed ``chunk_size`` at a time to bound
        memory. ``mask`` (B, T) marks observed steps and ``actions`` are the inputs, as in ``forward``.
        """
        bound = get_objective("iwae").log_likelihood
        return bound(self, x, k, chunk_size=chunk_size, mask=mask, generator=generator, actions=actions)

    def iwae_chunk_size(self, batch: int, steps: int, k: int) -> int:
        """How many importance samples ``log_likelihood`` processes at once by default.

        Sized by frame elements, not frames: a chunk decodes chunk * B * T frames at once, and
        2**21 elements keeps a 64x64 conv model's chunk near a gigabyte of activations.
        """
        elements = batch * steps * math.prod(self.config.frame_shape)
        return max(1, min(k, 2**21 // elements))

    # ------------------------------------------------------------------ generation

    sample = generation.sample
    predict = generation.predict

    # ------------------------------------------------------------------ the recurrence

    def filter(
        self, features: Tensor, noise: Tensor, state: Tensor | None = None, *, particles: int = 1, resample: Resampler | None = None,
        mask: Tensor | None = None) -> Filtered:
        """Run q over frame features (B, T, E) (``encode``) with posterior noise (T, particles * B, Z)
        (``noise``) from ``state`` (None: the recurrence's initial state): the time loop, for
        ``particles`` latent paths per sequence (rows particle-major), with ``resample`` a
        particle filter's hook (``vrnnkit.model.fused.fused_filter``); ``mask`` (B, T) the observed
        steps, read by a posterior that reads later frames (a smoothing one). Returns every step's
        h_{t-1}, posterior mean and std, z_t and phi_z(z_t), the final state, and a_t (the
        features' last ``action_embedding`` values) for a model with inputs."""
        batch, steps = features.shape[0] * particles, features.shape[1]
        time_major = features.transpose(0, 1)
        if state is None:
            state = self.rnn.initial_state(batch, device=features.device, dtype=features.dtype)
        # The parts that depend on the frames only, once per sequence, then shared by the paths.
        posterior_in, rnn_in = posterior_inputs(self.posterior, time_major, mask), self.rnn.precompute(time_major)
        if particles > 1:
            posterior_in, rnn_in = posterior_in.repeat(1, particles, 1), rnn_in.repeat(1, particles, 1)
        embedded = None if self.action_input is None else features[..., self.config.feature_dim:].repeat(particles, 1, 1)
        if self.fused_loop and self._compiled_step is None and fused_filter_supported(self.posterior, self.rnn, self.phi_z):
            return Filtered(*fused_filter(self.posterior, self.rnn, self.phi_z, posterior_in, rnn_in, noise, state, resample), embedded)
        # unbind, not indexing: one backward node stacks the per-step gradients, where
        # indexing would allocate and fill a whole (T, B, ...) gradient for every step.
        posterior_in, rnn_in = posterior_in.unbind(0), rnn_in.unbind(0)
        noise = noise.unbind(0)
        step = self._compiled_step or self._recurrent_step
        outputs = []
        for t in range(steps):
            *items, state = step(posterior_in[t], rnn_in[t], noise[t], state)
            outputs.append(items)
            rows = resample(t, *(item.detach() for item in items)) if resample is not None else None
            state = state if rows is None else state.index_select(0, rows)
        return Filtered(*(torch.stack(items, dim=1) for items in zip(*outputs, strict=True)), state, embedded)

    def _recurrent_step(
        self, posterior_in: Tensor, rnn_in: Tensor, noise: Tensor, state: Tensor
    ) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor, Tensor]:
        """One step of the filter, the only work that must run inside the time loop:
        (h_{t-1}, posterior mean, std, z_t, phi_z(z_t), next state)."""
        h = self.rnn.output(state)
        mean, std = self.posterior.step(posterior_in, h)
        z = torch.addcmul(mean, std, noise)
        f = self.phi_z(z)
        return h, mean, std, z, f, self.rnn.step(rnn_in, f, state)

    def compile_blocks(self, **options: Any) -> None:
        """``torch.compile`` what runs most: the encoder and decoder, once over all B*T frames
        (one static shape each), and the per-step recurrent function, T times per batch (it
        then replaces the hand-written fused loop). Worth it on GPUs; on a small CPU the
        compile time (tens of seconds) is rarely paid back."""
        self.encoder.compile(**options)
        self.decoder.compile(**options)
        self._compiled_step = torch.compile(self._recurrent_step, **options)

    def filter_step(
        self, frame: Tensor, state: Tensor, noise: Tensor, *, previous: Tensor | None = None, with_reference: bool = False,
        action: Tensor | None = None,
    ) -> tuple[Tensor, ...]:
        """One step of filtering a real frame (B, *frame) from ``state`` with posterior noise
        (B, z_dim): the next state and the latent z_t drawn from q, and with
        ``with_reference`` the frame's skip reference (None without a skip decoder);
        ``previous``: the frame before (None: zeros), read by ``frame_difference`` models;
        ``action`` (B, A): u_t, the input before this frame, for a model with inputs.

        The exported ONNX filtering graph is this function."""
        e, reference = self.encode_frame(frame, previous)
        e = self.with_actions(e, action)
        mean, std = self.posterior(e, self.rnn.output(state))
        z = torch.addcmul(mean, std, noise)
        next_state = self.rnn.step(self.rnn.precompute(e), self.phi_z(z), state)
        return (next_state, z, reference) if with_reference else (next_state, z)

    def generate_step(
        self,
        state: Tensor,
        noise: Tensor,
        reference: list[Tensor] | None = None,
        *,
        previous: Tensor | None = None,
        mean: bool = True,
        generator: torch.Generator | None = None,
        action: Tensor | None = None,
    ) -> tuple[Tensor, Tensor, Tensor, list[Tensor] | None]:
        """One step of generation from ``state`` with prior noise (B, z_dim): the likelihood's
        parameters, the frame (its mean, or a draw with ``mean=False``), the next state and,
        for a skip decoder, the new frame's reference (None otherwise). ``reference`` is the
        skip reference of this step (see ``vrnnkit.model.skips``; None: zeros, as at step 0);
        ``previous`` the frame before the new one (None: zeros), as in ``filter_step``; ``action``
        (B, A): u_t, the input the new frame is imagined under, for a model with inputs.

        The exported ONNX and torch.export graphs are this function."""
        h = self.rnn.output(state)
        a = self.embedded_action(action, state)
        prior_mean, prior_std = self.prior_step(h, a)
        f = self.phi_z(torch.addcmul(prior_mean, prior_std, noise))
        if self.uses_skips and reference is None:
            reference = skips.zeros(self.reference_shapes(), state.shape[0], state)
        params = self.decode(f, h, reference, a)
        frame = self.likelihood.mean(params) if mean else self.likelihood.sample(params, generator)
        features, new_reference = self.encode_frame(frame, previous)
        features = features if a is None else torch.cat([features, a], dim=-1)
        return params, frame, self.rnn.step(self.rnn.precompute(features), f, state), new_reference

    def encode_frame(self, frame: Tensor, previous: Tensor | None = None) -> tuple[Tensor, list[Tensor] | None]:
        """phi_x of one frame per sequence (after ``previous``), and its skip reference if any."""
        seen = inputs.encoder_input(frame, previous, bool(self.config.frame_difference))
        if not self.uses_skips:
            return self.encoder(seen), None
        features, maps = self.encoder.encode(seen)
        return features, [frame, *maps, *skips.motion(frame, previous, self.reads_motion)]

    @property
    def encoder_input_shape(self) -> tuple[int, ...]:
        """The shape of what phi_x reads per frame (``vrnnkit.model.inputs``)."""
        return inputs.encoder_input_shape(self.config.frame_shape, bool(self.config.frame_difference))

    def decode(self, f: Tensor, h: Tensor, reference: list[Tensor] | None, actions: Tensor | None = None) -> Tensor:
        """The likelihood's parameters from the latent features, h_{t-1} and, for a skip
        decoder, the reference frame followed by its feature maps. With ``skip_residual`` the
        decoder's output is added to the parameters whose mean is the reference frame, so it
        predicts what changes (copying is the starting point, not something to learn).
        ``actions``: the rows' a_t, for a model with inputs (``vrnnkit.model.actions``)."""
        extra: dict[str, Tensor] = {}
        if self.action_input is not None and actions is not None:
            h, extra = self.action_input.decoder_inputs(h, actions)
        if reference is None:
            return self.decoder(f, h, **extra)
        if self.warps_reference:  # the decoder gives the mean itself (vrnnkit.blocks.warp)
            mean, rest = self.decoder(f, h, reference[1:], reference[0], **extra)
            params = self.likelihood.frame_params(mean)
            return torch.cat([params[:, :1], params[:, 1:] + rest], dim=1)
        params = self.decoder(f, h, reference[1:], **extra)
        if self.config.skip_residual:
            params = self.residual_gate * params + self.likelihood.frame_params(reference[0])
        return params

    generate = generation.generate

    # ------------------------------------------------------------------ helpers

    def encode(self, x: Tensor, actions: Tensor | None = None) -> tuple[Tensor, list[Tensor] | None]:
        """phi_x over every frame, off the time loop: (B, T, *frame) -> (B, T, E), and, for a
        skip decoder, the reference of every frame (the frames, then each level of maps). A
        model with inputs gets ``actions`` (B, T, A), checked (``checked_actions``): its
        features are then [e_t, a_t], what the posterior and the recurrence read."""
        features, maps = self._encode_frames(x)
        return self.with_actions(features, actions), maps

    def with_actions(self, features: Tensor, actions: Tensor | None) -> Tensor:
        """Frame features (..., E) with the embedding a_t of their inputs u_t (..., A)
        appended, for a model with inputs; the features themselves otherwise."""
        a = self.embedded_action(actions, features)
        return features if a is None else torch.cat([features, a], dim=-1)

    def embedded_action(self, actions: Tensor | None, like: Tensor) -> Tensor | None:
        """a_t = embed(u_t) of inputs (..., A); None for a model without inputs. A model with
        inputs refuses None (DataError), one without refuses inputs."""
        if self.action_input is None or actions is None:
            check_actions(self.config.action_dim, actions, 0, 0, None, like)
            return None
        return self.action_input(actions.to(like.dtype))

    def checked_actions(self, actions: Any, batch: int, steps: int, step_mask: Tensor | None, like: Tensor) -> Tensor | None:
        """Inputs u (B, T, A) checked for this model, padding zeroed (``vrnnkit.model.actions.check_actions``)."""
        return check_actions(self.config.action_dim, actions, batch, steps, step_mask, like)

    def _encode_frames(self, x: Tensor) -> tuple[Tensor, list[Tensor] | None]:
        frames = x.flatten(0, 1)
        previous = inputs.previous_frames(x).flatten(0, 1) if self.reads_previous else None
        parts = inputs.encoder_input(frames, previous, bool(self.config.frame_difference)).split(self._frame_chunk(frames))
        if not self.uses_skips:
            return torch.cat([self.encoder(p) for p in parts]).view(x.shape[0], x.shape[1], -1), None
        encoded = [self.encoder.encode(p) for p in parts]
        features = torch.cat([e for e, _ in encoded]).view(x.shape[0], x.shape[1], -1)
        maps = [torch.cat(level) for level in zip(*(m for _, m in encoded), strict=True)]
        return features, [frames, *maps, *skips.motion(frames, previous, self.reads_motion, x.shape[1])]

    def references(self, maps: list[Tensor] | None, steps: int) -> list[Tensor] | None:
        """Each step's skip reference, from the references of every frame (``encode``)."""
        return None if maps is None else skips.gather(maps, steps, self.config.skip_context)

    def reference_shapes(self) -> list[tuple[int, ...]]:
        """Shapes of a skip reference, the frame then each feature map (none without skips)."""
        if not self.uses_skips:
            return []
        return [self.config.frame_shape, *self.encoder.skip_shapes, *skips.motion_shapes(self.config.frame_shape, self.reads_motion)]

    def _frame_chunk(self, frames: Tensor) -> int:
        """How many frames the batched encoder and decoder take at once. On the CPU, chunks of
        about ``cpu_chunk_elements`` values keep a chunk's activations in cache: at 64x64 the
        conv blocks ran 1.8x faster over chunks of 64 frames than over 640 frames at once. On
        GPUs, everything in one batch."""
        if frames.device.type != "cpu":
            return frames.shape[0]
        return max(1, self.cpu_chunk_elements // max(1, math.prod(self.config.frame_shape)))

    def prior_params(self, h: Tensor, actions: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """The prior p(z_t | h_{t-1}) over every step at once: mean and std (B, T, Z) from
        h_{t-1} stacked (B, T, H), as ``filter`` returns it (and its a_t, ``Filtered.actions``)."""
        mean, std = self.prior_step(h.flatten(0, 1), None if actions is None else actions.flatten(0, 1))
        return mean.view(*h.shape[:2], -1), std.view(*h.shape[:2], -1)

    def prior_step(self, h: Tensor, actions: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """The prior's mean and std for rows of h_{t-1} (N, H) and, with inputs, their a_t (N, W)."""
        if self.action_input is None or actions is None:
            return self.prior(h)
        return self.action_input.prior(self.prior, h, actions)

    def log_prob_frames(self, x: Tensor, filtered: Filtered, references: list[Tensor] | None) -> Tensor:
        """log p(x_t | z_t, h_{t-1}) for every step at once: (B, T); ``references`` are the skip
        references of every step, for a skip decoder."""
        f, h, frames = filtered.f.flatten(0, 1), filtered.h.flatten(0, 1), x.flatten(0, 1)
        chunk = self._frame_chunk(frames)
        actions = [None] * len(frames.split(chunk)) if filtered.actions is None else filtered.actions.flatten(0, 1).split(chunk)
        if references is None:
            chunked_references = [None] * len(frames.split(chunk))
        else:
            chunked_references = [list(r) for r in zip(*(m.split(chunk) for m in references), strict=True)]
        parts = [
            self.likelihood.log_prob(self.decode(f_part, h_part, reference, a_part), x_part)
            for f_part, h_part, x_part, reference, a_part in zip(
                f.split(chunk), h.split(chunk), frames.split(chunk), chunked_references, actions, strict=True
            )
        ]
        return torch.cat(parts).view(x.shape[:2])

    def noise(self, steps: int, rows: int, like: Tensor, generator: torch.Generator | None) -> Tensor:
        """Standard normal noise (steps, rows, z_dim) for ``filter``'s posterior draws, on
        ``like``'s device and dtype: drawn for all steps at once, time-major, so the loop only
        indexes it."""
        return randn((steps, rows, self.config.z_dim), generator=generator, device=like.device, dtype=like.dtype)

    def _device_dtype(self) -> tuple[torch.device, torch.dtype]:
        parameter = next(self.parameters())
        return parameter.device, parameter.dtype

    def check_frames(self, x: Any, name: str) -> tuple[int, int]:
        """(B, T) of a batch ``x`` (B, T, *frame_shape); a DataError names ``name`` otherwise."""
        return inputs.check_frames(self.config.frame_shape, x, name)

    check_mask = staticmethod(inputs.check_mask)

    def checked_batch(self, x: Any, mask: Tensor | None = None) -> tuple[Tensor, Tensor | None]:
        """A batch ``x`` (B, T, *frame_shape) checked with its padding zeroed, and its step mask
        (B, T) checked (None: every step observed): what every objective and bound starts from."""
        batch, steps = self.check_frames(x, "x")
        step_mask = self.check_mask(mask, batch, steps, x)
        return zero_padding(x, step_mask), step_mask

    def num_parameters(self) -> int:
        """The number of trainable parameters."""
        return sum(p.numel() for p in self.parameters() if p.requires_grad)
