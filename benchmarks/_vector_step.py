"""The classic vector VRNN training step that the speed benchmarks time (x 28, h 100, z 16,
GRU, 28 steps, Adam, clipping at 10), shared by bench_threads.py and compare_fused.py."""

from __future__ import annotations

import time

import torch

import vrnnkit


def vector_setup(batch: int) -> tuple[vrnnkit.VRNN, torch.optim.Optimizer, torch.Tensor]:
    """The model (seed 0), its Adam optimizer and a batch of binary 28-step sequences."""
    torch.manual_seed(0)
    config = vrnnkit.VRNNConfig(frame_shape=(28,), h_dim=100, z_dim=16, encoder="mlp", decoder="mlp", likelihood="bernoulli")
    model = vrnnkit.VRNN(config)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3, fused=True)
    return model, optimizer, (torch.rand(batch, 28, 28) > 0.5).float()


def seconds_per_step(model: vrnnkit.VRNN, optimizer: torch.optim.Optimizer, x: torch.Tensor, n: int) -> float:
    """Mean seconds of ``n`` training steps: forward, backward, clipping, Adam."""
    start = time.perf_counter()
    for _ in range(n):
        optimizer.zero_grad(set_to_none=True)
        model(x).loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 10.0)
        optimizer.step()
    return (time.perf_counter() - start) / n
