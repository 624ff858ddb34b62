"""A hand-written backward pass for the time loop of the default MLP posterior and GRU.

The loop is the one part of training that cannot be batched over time, and under autograd
every step records some thirty small nodes and multiplies each weight's gradient separately.
Here the forward pass runs without recording, keeps what the backward pass needs, and the
backward pass walks the steps in reverse computing only the gradients that flow along time;
the weight gradients are then one large matrix product per weight over all B*T rows, and the
derivatives of the activations are computed once for all steps.

It computes exactly what ``VRNN._filter`` computes with autograd for these blocks; the tests
compare both, gradients included. ``fused_filter_supported`` says when it applies: an ``mlp``
posterior with ReLU activations, a one-layer ``gru``, no dropout active in either, no autocast.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor, nn

from vrnnkit.blocks.layers import has_active_dropout
from vrnnkit.blocks.mlp import MLPPosterior
from vrnnkit.blocks.rnn import GRU

Resampler = Callable[[int, Tensor, Tensor, Tensor, Tensor, Tensor], "Tensor | None"]
"""``(t, h_prev, mean, std, z, f) -> rows or None``: a particle filter's resampling hook."""


def fused_filter_supported(posterior: nn.Module, rnn: nn.Module, phi_z: nn.Module) -> bool:
    """Whether ``fused_filter`` computes the loop of these blocks."""
    return (
        type(posterior) is MLPPosterior
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
    @staticmethod
    def forward(ctx: Any, n_body: int, min_std: float, resample: Resampler | None, posterior_in: Tensor, rnn_in: Tensor,
                noise: Tensor, h: Tensor, *weights: Tensor):
        w_state, *rest = weights
        body = [(rest[2 * i], rest[2 * i + 1]) for i in range(n_body)]
        w_head, b_head, w_z, b_z, w_latent, w_hh, b_hh = rest[2 * n_body :]
        size = h.shape[-1]
        w_state_t, w_head_t, w_z_t, w_latent_t, w_hh_t = (w.t() for w in (w_state, w_head, w_z, w_latent, w_hh))
        body_t = [(w.t(), b) for w, b in body]
        names = ("h", "a0", *[f"a{i + 1}" for i in range(n_body)], "mean", "std", "z", "f", "reset", "update", "candidate", "gh_n")
        saved: dict[str, list[Tensor]] = {name: [] for name in names}
        ancestors: list[Tensor | None] = []
        for t in range(posterior_in.shape[0]):
            saved["h"].append(h)
            a = torch.addmm(posterior_in[t], h, w_state_t).relu_()
            saved["a0"].append(a)
            for i, (w_t, b) in enumerate(body_t):
                a = torch.addmm(b, a, w_t).relu_()
                saved[f"a{i + 1}"].append(a)
            mean, raw = torch.addmm(b_head, a, w_head_t).chunk(2, dim=-1)
            std = torch.nn.functional.softplus(raw).add_(min_std)
            z = torch.addcmul(mean, std, noise[t])
            f = torch.addmm(b_z, z, w_z_t).relu_()
            gi = torch.addmm(rnn_in[t], f, w_latent_t)
            gh = torch.addmm(b_hh, h, w_hh_t)
            reset, update = torch.sigmoid(gi[:, : 2 * size] + gh[:, : 2 * size]).chunk(2, dim=-1)
            gh_n = gh[:, 2 * size :]
            candidate = torch.tanh(torch.addcmul(gi[:, 2 * size :], reset, gh_n))
            rows = resample(t, h, mean, std, z, f) if resample is not None else None
            h = torch.lerp(candidate, h, update)
            if rows is not None:
                h = h.index_select(0, rows)
            ancestors.append(rows)
            for name, value in (("mean", mean), ("std", std), ("z", z), ("f", f), ("reset", reset),
                                ("update", update), ("candidate", candidate), ("gh_n", gh_n)):
                saved[name].append(value)
        stacks = {name: torch.stack(values) for name, values in saved.items()}
        ctx.n_body, ctx.min_std, ctx.names, ctx.ancestors = n_body, min_std, names, ancestors
        ctx.save_for_backward(noise, *weights, *stacks.values())
        return stacks["h"], stacks["mean"], stacks["std"], stacks["z"], stacks["f"], h

    @staticmethod
    def backward(ctx: Any, g_h: Tensor | None, g_mean: Tensor | None, g_std: Tensor | None, g_z: Tensor | None, g_f: Tensor | None, g_last: Tensor | None):
        n_body, n_weights = ctx.n_body, 2 * ctx.n_body + 8
        noise, *tensors = ctx.saved_tensors
        weights, stacked = tensors[:n_weights], tensors[n_weights:]
        s = dict(zip(ctx.names, stacked, strict=True))
        w_state, *rest = weights
        body = [(rest[2 * i], rest[2 * i + 1]) for i in range(n_body)]
        w_head, _, w_z, _, w_latent, w_hh, _ = rest[2 * n_body :]
        steps, batch, size = s["h"].shape
        zeros = s["h"].new_zeros
        g_h, g_mean, g_std, g_z, g_f = (
            g if g is not None else zeros(ref.shape)
            for g, ref in ((g_h, s["h"]), (g_mean, s["mean"]), (g_std, s["std"]), (g_z, s["z"]), (g_f, s["f"]))
        )
        # Derivatives of the activations, for every step at once.
        d_softplus = -torch.expm1(ctx.min_std - s["std"])  # sigmoid(raw), from std = softplus(raw) + min
        f_on = s["f"] > 0
        a_on = [s[f"a{i}"] > 0 for i in range(n_body + 1)]
        d_candidate = 1.0 - s["candidate"].square()
        d_reset = s["reset"] * (1.0 - s["reset"])
        d_update = s["update"] * (1.0 - s["update"])

        d_gi = zeros(steps, batch, 3 * size)
        d_gh = zeros(steps, batch, 3 * size)
        d_f_pre = zeros(s["f"].shape)
        d_head = zeros(steps, batch, w_head.shape[0])
        d_a = [zeros(s[f"a{i}"].shape) for i in range(n_body + 1)]
        d_h = g_last if g_last is not None else zeros(batch, size)
        for t in reversed(range(steps)):
            if ctx.ancestors[t] is not None:  # the state was gathered: scatter its gradient back
                d_h = zeros(batch, size).index_add_(0, ctx.ancestors[t], d_h)
            h_prev, update, candidate = s["h"][t], s["update"][t], s["candidate"][t]
            # h = candidate + update * (h_prev - candidate)
            d_n = torch.mul(d_h, d_candidate[t]).sub_(d_h * update * d_candidate[t])
            d_gi[t, :, : size].copy_(d_n * s["gh_n"][t]).mul_(d_reset[t])
            d_gi[t, :, size : 2 * size].copy_(d_h * (h_prev - candidate)).mul_(d_update[t])
            d_gi[t, :, 2 * size :].copy_(d_n)
            d_gh[t, :, : 2 * size].copy_(d_gi[t, :, : 2 * size])
            torch.mul(d_n, s["reset"][t], out=d_gh[t, :, 2 * size :])
            d_h_prev = torch.addmm(d_h * update, d_gh[t], w_hh)
            # f = relu(W_z z + b_z); z = mean + std * noise; std = softplus(raw) + min
            torch.addmm(g_f[t], d_gi[t], w_latent, out=d_f_pre[t]).mul_(f_on[t])
            d_z = torch.addmm(g_z[t], d_f_pre[t], w_z)
            torch.add(d_z, g_mean[t], out=d_head[t, :, : w_z.shape[1]])
            torch.addcmul(g_std[t], d_z, noise[t], out=d_head[t, :, w_z.shape[1] :]).mul_(d_softplus[t])
            # Back through the posterior MLP to its first layer, which saw h_prev.
            grad = d_head[t].mm(w_head)
            for i in reversed(range(n_body)):
                torch.mul(grad, a_on[i + 1][t], out=d_a[i + 1][t])
                grad = d_a[i + 1][t].mm(body[i][0])
            torch.mul(grad, a_on[0][t], out=d_a[0][t])
            d_h = torch.addmm(d_h_prev, d_a[0][t], w_state).add_(g_h[t])

        def weight_grad(d_out: Tensor, inputs: Tensor) -> Tensor:
            return d_out.reshape(-1, d_out.shape[-1]).t().mm(inputs.reshape(-1, inputs.shape[-1]))

        grads = [weight_grad(d_a[0], s["h"])]
        for i in range(n_body):
            grads += [weight_grad(d_a[i + 1], s[f"a{i}"]), d_a[i + 1].sum((0, 1))]
        grads += [
            weight_grad(d_head, s[f"a{n_body}"]),
            d_head.sum((0, 1)),
            weight_grad(d_f_pre, s["z"]),
            d_f_pre.sum((0, 1)),
            weight_grad(d_gi, s["f"]),
            weight_grad(d_gh, s["h"]),
            d_gh.sum((0, 1)),
        ]
        return (None, None, None, d_a[0], d_gi, None, d_h, *grads)
