"""GRU and LSTM recurrences, n layers, with the whole state in one (B, state_size) tensor.

They compute exactly what ``nn.GRUCell`` / ``nn.LSTMCell`` (and ``nn.GRU`` / ``nn.LSTM`` one
step at a time) compute; the tests hold them to it. They are written out here for one reason:
the first layer's input is [e_t, f_t], and its frame-feature half does not depend on the
recurrence, so ``precompute`` multiplies it for every step at once before the time loop and
the loop only multiplies f_t and h_{t-1}.

``dropout`` (default 0) drops the non-recurrent connections of the cell, as Zaremba et al.
(2014) do: the inputs e_t and f_t of the first layer and the h passed from one layer to the
next; the recurrent path h_{t-1} -> h_t is never dropped. While it is active in training the
model's time loop runs under autograd instead of ``vrnnkit.fused``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from vrnnkit.blocks.base import RecurrentCell
from vrnnkit.blocks.layers import check_dropout, check_positive
from vrnnkit.registry import register


class _StackedCell(RecurrentCell):
    gates: int  # 3 for a GRU, 4 for an LSTM
    per_layer: int  # state width per layer, in units of hidden_size

    def __init__(
        self,
        feature_dim: int,
        latent_dim: int,
        hidden_size: int,
        num_layers: int = 1,
        bias: bool = True,
        learn_initial_state: bool = False,
        dropout: float = 0.0,
    ) -> None:
        super().__init__(learn_initial_state)
        check_dropout(dropout)
        check_positive(
            feature_dim=feature_dim, latent_dim=latent_dim, hidden_size=hidden_size, num_layers=num_layers
        )
        width = self.gates * hidden_size
        self.hidden_size = hidden_size
        self.num_layers = num_layers
        self.state_size = num_layers * self.per_layer * hidden_size
        self.from_features = nn.Linear(feature_dim, width, bias=bias)
        self.from_latent = nn.Linear(latent_dim, width, bias=False)
        self.from_below = nn.ModuleList(nn.Linear(hidden_size, width, bias=bias) for _ in range(num_layers - 1))
        self.from_state = nn.ModuleList(nn.Linear(hidden_size, width, bias=bias) for _ in range(num_layers))
        self.dropout = nn.Dropout(dropout)
        self._init_state_parameter()

    def _layer(self, gi: Tensor, layer: int, state: Tensor) -> tuple[Tensor, Tensor]:
        """(new layer state, its h) from the input gates ``gi`` and the layer's old state."""
        raise NotImplementedError

    def output(self, state: Tensor) -> Tensor:
        if self.state_size == self.hidden_size:
            return state
        start = (self.num_layers - 1) * self.per_layer * self.hidden_size
        return state[..., start : start + self.hidden_size]

    def precompute(self, e: Tensor) -> Tensor:
        return self.from_features(self.dropout(e))

    def step(self, pre: Tensor, f: Tensor, state: Tensor) -> Tensor:
        gi = torch.addmm(pre, self.dropout(f), self.from_latent.weight.t())
        if self.num_layers == 1:
            return self._layer(gi, 0, state)[0]
        layer_states = state.split(self.per_layer * self.hidden_size, dim=-1)
        new_states = []
        for layer in range(self.num_layers):
            new_state, h = self._layer(gi, layer, layer_states[layer])
            new_states.append(new_state)
            if layer + 1 < self.num_layers:
                gi = self.from_below[layer](self.dropout(h))
        return torch.cat(new_states, dim=-1)


@register("rnn", "gru")
class GRU(_StackedCell):
    """Gated recurrent unit (PyTorch's gate convention), ``num_layers`` stacked."""

    gates = 3
    per_layer = 1

    def _layer(self, gi: Tensor, layer: int, h: Tensor) -> tuple[Tensor, Tensor]:
        gh = self.from_state[layer](h)
        size = self.hidden_size
        i_rz, i_n = gi.split([2 * size, size], dim=-1)
        h_rz, h_n = gh.split([2 * size, size], dim=-1)
        reset, update = torch.sigmoid(i_rz + h_rz).chunk(2, dim=-1)
        candidate = torch.tanh(torch.addcmul(i_n, reset, h_n))
        h_new = torch.lerp(candidate, h, update)  # (1 - update) * candidate + update * h
        return h_new, h_new


@register("rnn", "lstm")
class LSTM(_StackedCell):
    """Long short-term memory (PyTorch's gate convention), ``num_layers`` stacked; each layer's
    state is [h, c]."""

    gates = 4
    per_layer = 2

    def _layer(self, gi: Tensor, layer: int, state: Tensor) -> tuple[Tensor, Tensor]:
        h, c = state.chunk(2, dim=-1)
        gates = gi + F.linear(h, self.from_state[layer].weight, self.from_state[layer].bias)
        i, f, g, o = gates.chunk(4, dim=-1)
        c_new = torch.addcmul(torch.sigmoid(f) * c, torch.sigmoid(i), torch.tanh(g))
        h_new = torch.sigmoid(o) * torch.tanh(c_new)
        return torch.cat([h_new, c_new], dim=-1), h_new
