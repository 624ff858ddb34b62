"""Fully connected blocks: the layout of the paper and of the reference PyTorch VRNN.

With h_dim=100, z_dim=16 on 28-dimensional frames the defaults give: phi_x two layers, the
posterior two layers, the prior one hidden layer, the decoder two layers (see the parameter
count test).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from vrnnkit.blocks.base import Posterior
from vrnnkit.blocks.distributions import positive_std
from vrnnkit.blocks.layers import activation as make_activation
from vrnnkit.blocks.layers import check_dropout, check_positive, mlp, numel
from vrnnkit.registry import register


def _widths(hidden: int, layers: int) -> list[int]:
    check_positive(hidden=hidden, layers=layers)
    return [hidden] * layers


@register("encoder", "mlp")
class MLPEncoder(nn.Module):
    """phi_x on flattened frames: ``layers`` linear layers, the last of width ``out_dim``;
    ``dropout`` after each activation."""

    def __init__(
        self,
        frame_shape: tuple[int, ...],
        out_dim: int,
        hidden: int | None = None,
        layers: int = 2,
        activation: str = "relu",
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        check_positive(out_dim=out_dim)
        widths = _widths(hidden or out_dim, layers)
        widths[-1] = out_dim
        self.net = mlp(numel(tuple(frame_shape)), widths, activation, dropout=dropout)

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x.flatten(1))


@register("decoder", "mlp")
class MLPDecoder(nn.Module):
    """p(x_t | z_t, h_{t-1})'s parameters from [phi_z(z_t), h_{t-1}] through ``layers`` hidden
    layers (``dropout`` after each activation); any frame shape, vectors or images. A model
    with inputs builds it with ``action_dim`` and passes the embedding a_t, appended to h_{t-1}."""

    reads_actions = True
    """Built with ``action_dim`` and called with ``actions=`` by a model with inputs (``vrnnkit.model.actions``)."""

    def __init__(
        self,
        latent_dim: int,
        h_dim: int,
        frame_shape: tuple[int, ...],
        params_per_element: int,
        hidden: int | None = None,
        layers: int = 2,
        activation: str = "relu",
        dropout: float = 0.0,
        action_dim: int = 0,
    ) -> None:
        super().__init__()
        check_positive(latent_dim=latent_dim, h_dim=h_dim, params_per_element=params_per_element)
        self.out_shape = (params_per_element, *frame_shape)
        self.body = mlp(latent_dim + h_dim + action_dim, _widths(hidden or h_dim, layers), activation, dropout=dropout)
        self.head = nn.Linear(hidden or h_dim, numel(self.out_shape))

    def forward(self, f: Tensor, h: Tensor, actions: Tensor | None = None) -> Tensor:
        out = self.head(self.body(torch.cat([f, h] if actions is None else [f, h, actions], dim=-1)))
        return out.view(out.shape[0], *self.out_shape)


class _GaussianHead(nn.Module):
    """A linear layer giving (mean, std) of a diagonal Gaussian over z."""

    def __init__(self, in_dim: int, z_dim: int, min_std: float) -> None:
        super().__init__()
        if not min_std > 0:
            raise ValueError(f"min_std must be > 0, got {min_std!r}")
        self.linear = nn.Linear(in_dim, 2 * z_dim)
        self.min_std = min_std

    def forward(self, a: Tensor) -> tuple[Tensor, Tensor]:
        mean, raw = self.linear(a).chunk(2, dim=-1)
        return mean, positive_std(raw, self.min_std)


@register("prior", "mlp")
class MLPPrior(nn.Module):
    """p(z_t | h_{t-1}) = N(mu, sd^2) from h_{t-1} through ``layers`` hidden layers (eq. 5); with
    ``action_dim`` (a model with inputs), p(z_t | h_{t-1}, u_t) from [h_{t-1}, a_t]."""

    reads_actions = True
    """Built with ``action_dim`` and called with ``actions=`` by a model with inputs (``vrnnkit.model.actions``)."""

    def __init__(
        self,
        h_dim: int,
        z_dim: int,
        hidden: int | None = None,
        layers: int = 1,
        activation: str = "relu",
        min_std: float = 1e-3,
        dropout: float = 0.0,
        action_dim: int = 0,
    ) -> None:
        super().__init__()
        check_positive(h_dim=h_dim, z_dim=z_dim)
        self.body = mlp(h_dim + action_dim, _widths(hidden or h_dim, layers), activation, dropout=dropout)
        self.head = _GaussianHead(hidden or h_dim, z_dim, min_std)

    def forward(self, h: Tensor, actions: Tensor | None = None) -> tuple[Tensor, Tensor]:
        return self.head(self.body(h if actions is None else torch.cat([h, actions], dim=-1)))


@register("prior", "standard-normal")
class StandardNormalPrior(nn.Module):
    """p(z_t) = N(0, I) whatever h_{t-1} is: the paper's VRNN-I."""

    def __init__(self, h_dim: int, z_dim: int) -> None:
        super().__init__()
        check_positive(h_dim=h_dim, z_dim=z_dim)
        self.z_dim = z_dim

    def forward(self, h: Tensor) -> tuple[Tensor, Tensor]:
        mean = h.new_zeros(*h.shape[:-1], self.z_dim)
        return mean, torch.ones_like(mean)


@register("posterior", "mlp")
class MLPPosterior(Posterior):
    """q(z_t | x_t, h_{t-1}) from [phi_x(x_t), h_{t-1}] through ``layers`` hidden layers (eq. 9).

    The first layer is one linear map of the concatenation, stored as its two halves: the
    frame-feature half runs over every step before the time loop (``precompute``), so the loop
    multiplies only h_{t-1}. ``dropout`` follows each activation; while it is active in
    training, the model's time loop runs under autograd instead of ``vrnnkit.fused``.
    """

    def __init__(
        self,
        feature_dim: int,
        h_dim: int,
        z_dim: int,
        hidden: int | None = None,
        layers: int = 2,
        activation: str = "relu",
        min_std: float = 1e-3,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        check_positive(feature_dim=feature_dim, h_dim=h_dim, z_dim=z_dim)
        check_dropout(dropout)
        widths = _widths(hidden or h_dim, layers)
        self.from_features = nn.Linear(feature_dim, widths[0])
        self.from_state = nn.Linear(h_dim, widths[0], bias=False)
        self.act = make_activation(activation)
        self.dropout = nn.Dropout(dropout)
        self.body = mlp(widths[0], widths[1:], activation, dropout=dropout)
        self.head = _GaussianHead(widths[-1], z_dim, min_std)

    def precompute(self, e: Tensor) -> Tensor:
        return self.from_features(e)

    def step(self, pre: Tensor, h: Tensor) -> tuple[Tensor, Tensor]:
        a = self.dropout(self.act(torch.addmm(pre, h, self.from_state.weight.t())))
        return self.head(self.body(a))

    def forward(self, e: Tensor, h: Tensor) -> tuple[Tensor, Tensor]:
        return self.step(self.precompute(e), h)

