"""Training throughput of the MLP VRNN against a naive per-step implementation.

The configuration is the classic small one: 28-dimensional frames (sequential MNIST rows),
h 100, z 16, one-layer GRU, 28 steps, Adam, gradient clipping before the step.
The naive model, written here, has the same layers and the same parameter count but runs
everything inside the time loop, encoder and decoder included, as the reference PyTorch VRNN
does. vrnnkit runs twice: with its fused time loop (the default) and with the plain autograd
loop. All are timed in the same process, in alternating rounds, with the same fused Adam, and
the script prints sequences per second for each and the ratios, for every batch size and
thread count of the grid (default: batch 8, 32, 128 on 1 and 2 threads; `make bench`).

    python benchmarks/bench_mlp_loop.py [--steps 10] [--rounds 5] [--threads 1 2] [--batches 8 32 128]
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

import torch
import torch.nn.functional as F
from torch import nn

import vrnnkit

X_DIM, H_DIM, Z_DIM, STEPS = 28, 100, 16, 28


class NaiveVRNN(nn.Module):
    """Everything in the loop, like the reference implementation (with a Bernoulli decoder)."""

    def __init__(self) -> None:
        super().__init__()
        h, z = H_DIM, Z_DIM
        self.phi_x = nn.Sequential(nn.Linear(X_DIM, h), nn.ReLU(), nn.Linear(h, h), nn.ReLU())
        self.phi_z = nn.Sequential(nn.Linear(z, h), nn.ReLU())
        self.enc = nn.Sequential(nn.Linear(2 * h, h), nn.ReLU(), nn.Linear(h, h), nn.ReLU())
        self.enc_mean = nn.Linear(h, z)
        self.enc_std = nn.Sequential(nn.Linear(h, z), nn.Softplus())
        self.prior = nn.Sequential(nn.Linear(h, h), nn.ReLU())
        self.prior_mean = nn.Linear(h, z)
        self.prior_std = nn.Sequential(nn.Linear(h, z), nn.Softplus())
        self.dec = nn.Sequential(nn.Linear(2 * h, h), nn.ReLU(), nn.Linear(h, h), nn.ReLU())
        self.dec_logits = nn.Linear(h, X_DIM)
        self.rnn = nn.GRU(2 * h, h, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch = x.shape[0]
        h = x.new_zeros(1, batch, H_DIM)
        kl = nll = 0.0
        for t in range(x.shape[1]):
            phi_x_t = self.phi_x(x[:, t])
            enc_t = self.enc(torch.cat([phi_x_t, h[-1]], 1))
            enc_mean_t, enc_std_t = self.enc_mean(enc_t), self.enc_std(enc_t) + 1e-3
            prior_t = self.prior(h[-1])
            prior_mean_t, prior_std_t = self.prior_mean(prior_t), self.prior_std(prior_t) + 1e-3
            z_t = enc_mean_t + enc_std_t * torch.randn_like(enc_std_t)
            phi_z_t = self.phi_z(z_t)
            logits_t = self.dec_logits(self.dec(torch.cat([phi_z_t, h[-1]], 1)))
            _, h = self.rnn(torch.cat([phi_x_t, phi_z_t], 1).unsqueeze(0), h)
            kl = kl + (
                torch.log(prior_std_t) - torch.log(enc_std_t)
                + (enc_std_t.pow(2) + (enc_mean_t - prior_mean_t).pow(2)) / (2 * prior_std_t.pow(2))
                - 0.5
            ).sum()
            nll = nll + F.binary_cross_entropy_with_logits(logits_t, x[:, t], reduction="sum")
        return (kl + nll) / batch


def vrnnkit_model(fused_loop: bool) -> vrnnkit.VRNN:
    config = vrnnkit.VRNNConfig(
        frame_shape=(X_DIM,), h_dim=H_DIM, z_dim=Z_DIM, encoder="mlp", decoder="mlp", likelihood="bernoulli"
    )
    model = vrnnkit.VRNN(config)
    model.fused_loop = fused_loop
    return model


def make_step(model: nn.Module, loss_of) -> callable:
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3, fused=True)

    def step(x: torch.Tensor) -> None:
        optimizer.zero_grad(set_to_none=True)
        loss = loss_of(model, x)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 10.0)  # before the step, where it acts
        optimizer.step()

    return step


def seconds_per_step(step, x: torch.Tensor, n: int) -> float:
    start = time.perf_counter()
    for _ in range(n):
        step(x)
    return (time.perf_counter() - start) / n


def time_cell(batch: int, steps_per_round: int, rounds: int) -> tuple[dict[str, float], int]:
    """Median seconds per training step of each implementation at one batch size, timed in
    alternating rounds; and the step's arithmetic floor in seconds."""
    torch.manual_seed(0)
    x = (torch.rand(batch, STEPS, X_DIM) > 0.5).float()
    ours, unfused, naive = vrnnkit_model(True), vrnnkit_model(False), NaiveVRNN()
    n_ours, n_naive = ours.num_parameters(), sum(p.numel() for p in naive.parameters())
    assert n_ours == n_naive, f"parameter counts differ: vrnnkit {n_ours}, naive {n_naive}"
    steps = {
        "vrnnkit": make_step(ours, lambda m, x: m(x).loss),
        "autograd loop": make_step(unfused, lambda m, x: m(x).loss),
        "naive loop": make_step(naive, lambda m, x: m(x)),
    }
    for step in steps.values():  # warm-up: allocator, Adam state
        seconds_per_step(step, x, 3)
    timings: dict[str, list[float]] = {name: [] for name in steps}
    for _ in range(rounds):
        for name, step in steps.items():
            timings[name].append(seconds_per_step(step, x, steps_per_round))
    return {name: statistics.median(times) for name, times in timings.items()}, floor_seconds(unfused, x)


def floor_seconds(model: vrnnkit.VRNN, x: torch.Tensor) -> float:
    """The step's arithmetic floor: its matrix-product FLOPs (counted on the autograd loop,
    the same products) at the rate this machine multiplies a (B*T, 200) x (200, 100) matrix now."""
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as counter:
        model(x).loss.backward()
    a, b = torch.randn(x.shape[0] * x.shape[1], 200), torch.randn(200, 100)
    a.mm(b)
    start, repeats = time.perf_counter(), 20
    for _ in range(repeats):
        a.mm(b)
    rate = 2 * a.shape[0] * 200 * 100 * repeats / (time.perf_counter() - start)
    return counter.get_total_flops() / rate


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=10, help="training steps per timed round")
    parser.add_argument("--rounds", type=int, default=5, help="alternating rounds per implementation")
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--batches", type=int, nargs="+", default=[8, 32, 128])
    args = parser.parse_args()
    print(f"torch {torch.__version__}; {STEPS} steps, x {X_DIM}, h {H_DIM}, z {Z_DIM}; "
          f"load average at start {os.getloadavg()[0]:.2f} on {os.cpu_count()} cores")
    print(f"median of {args.rounds} alternating rounds of {args.steps} steps; sequences/s, and the ratio to the naive loop")
    print("bound: the naive loop's step time over the step's arithmetic floor, the most any ratio can be")
    print(f"{'batch':>5} {'threads':>7} {'vrnnkit':>9} {'autograd loop':>14} {'naive loop':>11} {'ratio':>7} {'autograd ratio':>15}"
          f" {'bound':>6} {'vrnnkit / floor':>16}")
    for threads in args.threads:
        torch.set_num_threads(threads)
        for batch in args.batches:
            seconds, floor = time_cell(batch, args.steps, args.rounds)
            rate = {name: batch / value for name, value in seconds.items()}
            naive = rate["naive loop"]
            print(f"{batch:>5} {threads:>7} {rate['vrnnkit']:>9.0f} {rate['autograd loop']:>14.0f} {naive:>11.0f} "
                  f"{rate['vrnnkit'] / naive:>6.2f}x {rate['autograd loop'] / naive:>14.2f}x "
                  f"{seconds['naive loop'] / floor:>5.1f}x {seconds['vrnnkit'] / floor:>15.1f}x", flush=True)
    print(f"load average at end {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
