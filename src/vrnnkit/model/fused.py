"""A hand-written backward pass for the time loop of the default MLP posterior and GRU.

The loop is the one part of training that cannot be batched over time, and under autograd
every step records some thirty small nodes and multiplies each weight's gradient separately.
Here the forward pass runs without recording, keeps what the backward pass needs, and the
backward pass walks the steps in reverse computing only the gradients that flow along time;
the weight gradients are then one large matrix product per weight over all B*T rows, and the
derivatives of the activations are computed once for all steps. Both passes are written for
the CPU's per-operation costs (fewer, in-place operations per step; views made once); what
each choice gained is measured in docs/performance.md.

It computes exactly what ``VRNN.filter`` computes with autograd for these blocks; the tests
compare both, gradients included. ``fused_filter_supported`` says when it applies: an ``mlp``
posterior (or a ``smoothing`` one: the same step on a wider precomputed input, whose backward
summary runs before the loop and takes its gradient through autograd) with ReLU activations, a
one-layer ``gru``, no dropout active in either, no autocast.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor, nn

from vrnnkit.blocks.layers import has_active_dropout
from vrnnkit.blocks.mlp import MLPPosterior
from vrnnkit.blocks.rnn import GRU
from vrnnkit.blocks.smoothing import SmoothingPosterior

Resampler = Callable[[int, Tensor, Tensor, Tensor, Tensor, Tensor], "Tensor | None"]
"""``(t, h_prev, mean, std, z, f) -> rows or None``: a particle filter's resampling hook."""


def fused_filter_supported(posterior: nn.Module, rnn: nn.Module, phi_z: nn.Module) -> bool:
    """Whether ``fused_filter`` computes the loop of these blocks."""
    return (
        type(posterior) in (MLPPosterior, SmoothingPosterior)
        and isinstance(posterior.act, nn.ReLU)
        and all(isinstance(m, (nn.Linear, nn.ReLU, nn.Dropout)) for m in posterior.body)
        and type(rnn) is GRU
        and rnn.num_layers == 1
        and rnn.from_state[0].bias is not None
        and isinstance(phi_z, nn.Sequential)
        and len(phi_z) == 2
        and isinstance(phi_z[1], nn.ReLU)
        and not has_active_dropout(posterior)
        and not has_active_dropout(rnn)
        and not any(torch.is_autocast_enabled(device) for device in ("cpu", "cuda"))
    )


def fused_filter(
    posterior: MLPPosterior, rnn: GRU, phi_z: nn.Sequential, posterior_in: Tensor, rnn_in: Tensor, noise: Tensor, state: Tensor,
    resample: Resampler | None = None,
) -> tuple[Tensor, ...]:
    """The time loop over time-major inputs (T, B, ...): returns h_{t-1}, mean, std, z, f
    (each (B, T, ...)) and the final state. ``resample(t, h_prev, mean, std, z, f)``, called
    after every step without gradients, may return the rows (B,) the next state is gathered
    from (a particle filter's ancestors); its gradient is scattered back to them."""
    body = [m for m in posterior.body if isinstance(m, nn.Linear)]
    weights = [
        posterior.from_state.weight,
        *[p for layer in body for p in (layer.weight, layer.bias)],
        posterior.head.linear.weight,
        posterior.head.linear.bias,
        phi_z[0].weight,
        phi_z[0].bias,
        rnn.from_latent.weight,
        rnn.from_state[0].weight,
        rnn.from_state[0].bias,
    ]
    outputs = _FusedFilter.apply(len(body), posterior.head.min_std, resample, posterior_in, rnn_in, noise, state, *weights)
    *stacked, last = outputs
    return (*(x.transpose(0, 1) for x in stacked), last)


class _FusedFilter(torch.autograd.Function):
    """Per step the forward pass runs five matrix products: h_{t-1} times the GRU's recurrent
    weights and the posterior's ``from_state`` weights stacked into one (3H + H1, H) matrix, one
    per posterior body layer, the Gaussian head, phi_z and the GRU's latent input. Everything
    it keeps is written into buffers allocated once for all steps (no stacking afterwards);
    the frame-only terms and the recurrent bias are laid into the first product's output
    before the loop, which the product then adds to in place.

    The backward pass keeps two products for the gradient reaching h_{t-1} (GRU and posterior):
    one product over the stacked weights needs the two gradients side by side in one buffer,
    and writing them into its column slices cost more on the CPU than the product saved
    (measured: docs/performance.md). Strided reads cost too, so the backward pass makes the
    gates it reads at every step contiguous once, before its loop."""

    @staticmethod
    def forward(ctx: Any, n_body: int, min_std: float, resample: Resampler | None, posterior_in: Tensor, rnn_in: Tensor,
                noise: Tensor, h: Tensor, *weights: Tensor):
        w_state, *rest = weights
        body = [(rest[2 * i].t(), rest[2 * i + 1]) for i in range(n_body)]
        w_head, b_head, w_z, b_z, w_latent, w_hh, b_hh = rest[2 * n_body :]
        steps, batch = posterior_in.shape[:2]
        size, z_dim = h.shape[-1], w_z.shape[1]
        w_cat_t = torch.cat([w_hh, w_state]).t()  # (H, 3H + H1): both products of h_{t-1} at once
        pre = posterior_in.new_empty(steps, batch, w_cat_t.shape[1])
        pre[..., : 3 * size] = b_hh
        pre[..., 3 * size :] = posterior_in
        new = posterior_in.new_empty
        buf = {"h": new(steps + 1, batch, size), "gates": new(steps, batch, 2 * size), "candidate": new(steps, batch, size),
               "head": new(steps, batch, 2 * z_dim), "std": new(steps, batch, z_dim), "z": new(steps, batch, z_dim),
               "f": new(steps, batch, w_z.shape[0])}
        acts = [new(steps, batch, w.shape[1]) for w, _ in body]
        buf["h"][0] = h
        # Each step's rows of every buffer, as views made once (see the backward pass).
        v = {name: x.unbind(0) for name, x in {
            "g": pre, "gh_rz": pre[..., : 2 * size], "gh_n": pre[..., 2 * size : 3 * size], "a0": pre[..., 3 * size :],
            "h": buf["h"], "gates": buf["gates"], "candidate": buf["candidate"], "head": buf["head"],
            "mean": buf["head"][..., :z_dim], "raw": buf["head"][..., z_dim:], "std": buf["std"], "z": buf["z"], "f": buf["f"],
            "rnn_in": rnn_in, "noise": noise}.items()}
        v["acts"] = list(zip(*(x.unbind(0) for x in acts), strict=True)) if acts else [()] * steps
        weights_t = (w_cat_t, w_head.t(), b_head, w_z.t(), b_z, w_latent.t())
        ancestors = [_forward_step(t, v, body, weights_t, min_std, resample) for t in range(steps)]
        ctx.n_body, ctx.min_std, ctx.ancestors = n_body, min_std, ancestors
        ctx.save_for_backward(noise, *weights, pre, *(buf[k] for k in ("h", "gates", "candidate", "std", "z", "f")), *acts)
        hs = buf["h"]
        return hs[:steps], buf["head"][..., :z_dim].clone(), buf["std"], buf["z"], buf["f"], hs[steps].clone()

    @staticmethod
    def backward(ctx: Any, g_h: Tensor | None, g_mean: Tensor | None, g_std: Tensor | None, g_z: Tensor | None, g_f: Tensor | None, g_last: Tensor | None):
        n_body, n_weights = ctx.n_body, 2 * ctx.n_body + 8
        noise, *tensors = ctx.saved_tensors
        weights = tensors[:n_weights]
        pre, hs, gates, candidate, std, z, f, *acts = tensors[n_weights:]
        w_state, *rest = weights
        body = [rest[2 * i] for i in range(n_body)]
        w_head, _, w_z, _, w_latent, w_hh, _ = rest[2 * n_body :]
        steps, batch = pre.shape[:2]
        size, z_dim = hs.shape[-1], z.shape[-1]
        h = hs[:steps]
        a = [pre[..., 3 * size :], *acts]  # the posterior's activations, first layer first
        gh_n, reset, update = pre[..., 2 * size : 3 * size], gates[..., :size], gates[..., size:]
        zeros, empty = h.new_zeros, h.new_empty
        g_h, g_mean, g_std, g_z, g_f = (
            g if g is not None else zeros(shape)
            for g, shape in ((g_h, h.shape), (g_mean, std.shape), (g_std, std.shape), (g_z, z.shape), (g_f, f.shape))
        )
        # Derivatives of the activations, for every step at once. (Elementwise work over all
        # steps is memory-bound: only what saves more than one pass per step is hoisted here.)
        d_softplus = -torch.expm1(ctx.min_std - std)  # sigmoid(raw), from std = softplus(raw) + min
        noise_sp, g_std_sp = noise * d_softplus, g_std * d_softplus
        f_on = torch.sign(f)  # 1 where the ReLU passed, else 0: masks in the gradients' dtype,
        a_on = [torch.sign(x) for x in a]  # one pass each (a bool operand is slower at every step)
        d_n_of_h = (1.0 - candidate.square()).mul_(1.0 - update)  # h = lerp(candidate, h_prev, update)
        d_reset = (reset * (1.0 - reset)).mul_(gh_n)  # contiguous: strided operands slow the step's products
        d_update = (update * (1.0 - update)).mul_(h - candidate)
        reset, update = reset.contiguous(), update.contiguous()

        d_gi, d_gh = empty(steps, batch, 3 * size), empty(steps, batch, 3 * size)
        d_f_pre, d_head, d_a0 = empty(f.shape), empty(steps, batch, 2 * z_dim), empty(a[0].shape)
        d_a = [empty(x.shape) for x in acts]
        # Each step's rows of every array, as views made once: indexing and slicing a tensor
        # costs microseconds of Python per view, about as much as a small product.
        v = {name: x.unbind(0) for name, x in {
            "gi": d_gi, "gi_r": d_gi[..., :size], "gi_u": d_gi[..., size : 2 * size], "gi_n": d_gi[..., 2 * size :],
            "gh": d_gh, "gh_r": d_gh[..., :size], "gh_u": d_gh[..., size : 2 * size], "gh_n": d_gh[..., 2 * size :],
            "f_pre": d_f_pre, "head": d_head, "head_mean": d_head[..., :z_dim], "head_std": d_head[..., z_dim:], "a0": d_a0,
            "k_n": d_n_of_h, "k_r": d_reset, "k_u": d_update, "reset": reset, "update": update, "f_on": f_on,
            "g_h": g_h, "g_f": g_f, "g_z": g_z, "g_mean": g_mean, "g_std": g_std_sp, "noise": noise_sp, "a0_on": a_on[0],
        }.items()}
        body_views = [(x.unbind(0), on.unbind(0)) for x, on in zip(d_a, a_on[1:], strict=True)]
        d_h = g_last if g_last is not None else zeros(batch, size)
        for t in reversed(range(steps)):
            if ctx.ancestors[t] is not None:  # the state was gathered: scatter its gradient back
                d_h = zeros(batch, size).index_add_(0, ctx.ancestors[t], d_h)
            d_n = torch.mul(d_h, v["k_n"][t], out=v["gi_n"][t])
            # The reset and update columns of d_gi and d_gh are equal; computing them twice is
            # cheaper than a copy_ between column slices (about 10x slower per element here).
            for gi_or_gh in ("gi", "gh"):
                torch.mul(d_n, v["k_r"][t], out=v[f"{gi_or_gh}_r"][t])
                torch.mul(d_h, v["k_u"][t], out=v[f"{gi_or_gh}_u"][t])
            torch.mul(d_n, v["reset"][t], out=v["gh_n"][t])
            d_h_prev = torch.addcmul(v["g_h"][t], d_h, v["update"][t]).addmm_(v["gh"][t], w_hh)
            # f = relu(W_z z + b_z); z = mean + std * noise; std = softplus(raw) + min
            d_f = torch.addmm(v["g_f"][t], v["gi"][t], w_latent, out=v["f_pre"][t]).mul_(v["f_on"][t])
            d_z = torch.addmm(v["g_z"][t], d_f, w_z)
            torch.add(d_z, v["g_mean"][t], out=v["head_mean"][t])
            torch.addcmul(v["g_std"][t], d_z, v["noise"][t], out=v["head_std"][t])
            # Back through the posterior MLP to its first layer, which saw h_prev.
            grad = v["head"][t].mm(w_head)
            for i in reversed(range(n_body)):
                grad = torch.mul(grad, body_views[i][1][t], out=body_views[i][0][t]).mm(body[i])
            d_h = d_h_prev.addmm_(torch.mul(grad, v["a0_on"][t], out=v["a0"][t]), w_state)

        def weight_grad(d_out: Tensor, inputs: Tensor) -> Tensor:
            return d_out.reshape(-1, d_out.shape[-1]).t().mm(inputs.reshape(-1, inputs.shape[-1]))

        grads = [weight_grad(d_a0, h)]
        for i in range(n_body):
            grads += [weight_grad(d_a[i], a[i]), d_a[i].sum((0, 1))]
        grads += [
            weight_grad(d_head, a[n_body]),
            d_head.sum((0, 1)),
            weight_grad(d_f_pre, z),
            d_f_pre.sum((0, 1)),
            weight_grad(d_gi, f),
            weight_grad(d_gh, h),
            d_gh.sum((0, 1)),
        ]
        return (None, None, None, d_a0, d_gi, None, d_h, *grads)

def _forward_step(t: int, v: dict[str, Any], body: list[tuple[Tensor, Tensor]], w: tuple[Tensor, ...], min_std: float,
                  resample: Resampler | None) -> Tensor | None:
    """Step ``t`` of ``_FusedFilter.forward``, writing into the step's views ``v`` of the buffers."""
    w_cat_t, w_head_t, b_head, w_z_t, b_z, w_latent_t = w
    h, size = v["h"][t], v["h"][t].shape[-1]
    v["g"][t].addmm_(h, w_cat_t)  # [gh | posterior pre-activation], bias and frame terms already in place
    a = v["a0"][t].relu_()
    for (w_t, b), out in zip(body, v["acts"][t], strict=True):
        a = torch.addmm(b, a, w_t, out=out).relu_()
    mean = v["mean"][t]
    torch.addmm(b_head, a, w_head_t, out=v["head"][t])
    std = torch.add(torch.nn.functional.softplus(v["raw"][t]), min_std, out=v["std"][t])
    z = torch.addcmul(mean, std, v["noise"][t], out=v["z"][t])
    f = torch.addmm(b_z, z, w_z_t, out=v["f"][t]).relu_()
    gi_rz, gi_n = torch.addmm(v["rnn_in"][t], f, w_latent_t).split([2 * size, size], dim=1)
    reset, update = torch.sigmoid(gi_rz.add_(v["gh_rz"][t]), out=v["gates"][t]).chunk(2, dim=-1)
    candidate = torch.tanh(gi_n.addcmul_(reset, v["gh_n"][t]), out=v["candidate"][t])
    rows = resample(t, h, mean, std, z, f) if resample is not None else None
    if rows is None:
        torch.lerp(candidate, h, update, out=v["h"][t + 1])
    else:
        torch.index_select(torch.lerp(candidate, h, update), 0, rows, out=v["h"][t + 1])
    return rows
