"""Add a block of your own to vrnnkit's registry and train a model that uses it.

    python examples/custom_block.py [--steps 100]

The block here is a prior: a Gaussian whose mean follows h_{t-1} linearly and whose standard
deviation is one learned number per latent dimension. Once registered, its name works
everywhere a prior name does: `VRNNConfig(prior=...)`, `vrnnkit.train(prior=...)`, and
`vrnnkit train --prior ...` when the module is imported through an entry point.

To ship blocks in a package of your own, without any import by hand, declare the module in
that package's pyproject.toml; vrnnkit loads it on the first registry look-up:

    [project.entry-points."vrnnkit.blocks"]
    my_blocks = "my_package.vrnnkit_blocks"
"""

from __future__ import annotations

import argparse

import torch
import torch.nn.functional as F
from torch import nn

import vrnnkit


@vrnnkit.register("prior", "linear-gaussian")
class LinearGaussianPrior(nn.Module):
    """p(z_t | h_{t-1}) = N(W h_{t-1} + b, diag(softplus(s))^2)."""

    def __init__(self, h_dim: int, z_dim: int, min_std: float = 1e-3) -> None:
        super().__init__()
        self.mean = nn.Linear(h_dim, z_dim)
        self.raw_std = nn.Parameter(torch.zeros(z_dim))
        self.min_std = min_std

    def forward(self, h: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        mean = self.mean(h)
        return mean, (F.softplus(self.raw_std) + self.min_std).expand_as(mean)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=100)
    args = parser.parse_args()

    print("registered priors:", ", ".join(vrnnkit.list_blocks("prior")))
    config = vrnnkit.VRNNConfig(frame_shape=(8,), h_dim=32, z_dim=4, prior="linear-gaussian")
    model = vrnnkit.VRNN(config)
    x = (torch.rand(64, 12, 8) > 0.7).float()
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    first = model(x).loss.item()
    for _ in range(args.steps):
        optimizer.zero_grad()
        model(x).loss.backward()
        optimizer.step()
    last = model(x).loss.item()
    print(f"loss {first:.2f} -> {last:.2f} after {args.steps} steps with the custom prior")
    print(f"its learned standard deviations: {F.softplus(model.prior.raw_std).detach().numpy().round(3)}")


if __name__ == "__main__":
    main()
