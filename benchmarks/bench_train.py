"""Training-step throughput against two references, measured side by side in one run.

For one configuration and device it times three things on the same batch, in alternating
rounds, and prints sequences/s, frames/s and peak memory:

- **vrnnkit**: ``vrnnkit.training.train_step``, the step ``vrnnkit train`` runs (forward,
  backward through the grad scaler, gradient clipping, the non-finite check, Adam);
- **naive**: the same model, the same weights and optimizer, with the whole step inside the
  time loop (encoder, prior, posterior, decoder and likelihood called once per frame), as the
  reference PyTorch VRNN does -> ratio (a) = vrnnkit throughput / naive throughput;
- **floor**: the encoder and decoder alone, forward and backward over the same B x T frames
  with no recurrence, plus their optimizer step -> ratio (b) = vrnnkit step time / floor time.

It also reports the model's FLOPs per step (counted by ``torch.utils.flop_counter``) as
GFLOP/s against this machine's measured fp32 matrix-multiply rate.

    python benchmarks/bench_train.py                     # conv, 64x64, batch 32, 20 frames, CPU
    python benchmarks/bench_train.py --config mlp        # 28-dim frames, h 100, z 16, batch 128, 28 steps
    python benchmarks/bench_train.py --device cuda --batch 64 --precision bf16 [--compile]
"""

from __future__ import annotations

import argparse
import math
import resource
import statistics
import time
from collections.abc import Callable
from types import SimpleNamespace

import torch
from torch import Tensor, nn

import vrnnkit

CONFIGS = {
    # the default conv configuration of `vrnnkit train`, at 64x64
    "conv": dict(frame_shape=(1, 64, 64), h_dim=64, z_dim=16, batch=32, steps=20),
    # the classic small vector configuration (sequential MNIST rows)
    "mlp": dict(frame_shape=(28,), h_dim=100, z_dim=16, batch=128, steps=28),
}


def naive_loss(model: vrnnkit.VRNN, x: Tensor, noise: Tensor) -> Tensor:
    """The negative ELBO with every block called inside the time loop (kl_weight 1)."""
    from vrnnkit.blocks.distributions import normal_kl

    batch, steps = x.shape[:2]
    state = model.rnn.initial_state(batch, device=x.device, dtype=x.dtype)
    total = x.new_zeros(())
    for t in range(steps):
        e = model.encoder(x[:, t])
        h = model.rnn.output(state)
        mean_q, std_q = model.posterior(e, h)
        mean_p, std_p = model.prior(h)
        z = torch.addcmul(mean_q, std_q, noise[t])
        f = model.phi_z(z)
        nll = -model.likelihood.log_prob(model.decoder(f, h), x[:, t])
        total = total + (nll + normal_kl(mean_q, std_q, mean_p, std_p).sum(-1)).mean()
        state = model.rnn.step(model.rnn.precompute(e), f, state)
    return total


def floor_loss(model: vrnnkit.VRNN, x: Tensor, latent: Tensor, h: Tensor) -> Tensor:
    """The encoder and decoder over all B*T frames, no recurrence: the floor. They run as the
    model runs them (in cache-sized chunks of frames on the CPU)."""
    features, maps = model.encode(x)
    filtered = SimpleNamespace(f=latent.view(*x.shape[:2], -1), h=h.view(*x.shape[:2], -1))
    nll = -model.log_prob_frames(x, filtered, model.references(maps, x.shape[1]))
    return nll.sum() / x.shape[0] + features.square().mean()


def make_train_step(model: vrnnkit.VRNN, x: Tensor, generator: torch.Generator, precision: str, device: torch.device) -> Callable[[], None]:
    """The real training step of ``vrnnkit train`` (KL weight 1, the references' lr and clip)."""
    from vrnnkit.training import TrainConfig, make_scaler, train_step

    config = TrainConfig(precision=precision, lr=1e-4, clip=10.0, kl_anneal=0)
    optimizer = torch.optim.Adam(model.parameters(), lr=config.lr)
    scaler = make_scaler(config, device)

    def step() -> None:
        train_step(model, x, optimizer, scaler, config, step=0, generator=generator)

    return step


def make_step(parameters: list[nn.Parameter], loss_of: Callable[[], Tensor], autocast: torch.dtype | None, device: torch.device) -> Callable[[], None]:
    optimizer = torch.optim.Adam(parameters, lr=1e-4)

    def step() -> None:
        optimizer.zero_grad(set_to_none=True)
        with torch.autocast(device.type, dtype=autocast or torch.float32, enabled=autocast is not None):
            loss = loss_of()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(parameters, 10.0)
        optimizer.step()

    return step


def timed(step: Callable[[], None], n: int, device: torch.device) -> float:
    synchronize(device)
    start = time.perf_counter()
    for _ in range(n):
        step()
    synchronize(device)
    return (time.perf_counter() - start) / n


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def matmul_rate(device: torch.device, size: int = 1024, seconds: float = 1.0) -> float:
    """Measured fp32 matrix-multiply GFLOP/s on ``device``: the practical peak to compare with."""
    a = torch.randn(size, size, device=device)
    b = torch.randn(size, size, device=device)
    for _ in range(3):
        a @ b
    n, start = 0, time.perf_counter()
    synchronize(device)
    while time.perf_counter() - start < seconds:
        a @ b
        n += 1
    synchronize(device)
    return 2 * size**3 * n / (time.perf_counter() - start) / 1e9


def count_flops(step_loss: Callable[[], Tensor]) -> int:
    from torch.utils.flop_counter import FlopCounterMode

    counter = FlopCounterMode(display=False)
    with counter:
        step_loss().backward()
    return counter.get_total_flops()


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", choices=sorted(CONFIGS), default="conv")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--batch", type=int, help="sequences per batch (default: the configuration's)")
    parser.add_argument("--steps", type=int, help="frames per sequence (default: the configuration's)")
    parser.add_argument("--precision", choices=["fp32", "bf16"], default="fp32")
    parser.add_argument("--compile", action="store_true", help="model.compile_blocks(): encoder, decoder, recurrent step")
    parser.add_argument("--iters", type=int, default=5, help="training steps per timed round")
    parser.add_argument("--rounds", type=int, default=3, help="alternating rounds")
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--skip-naive", action="store_true", help="only vrnnkit and the floor")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    device = torch.device(args.device)
    spec = dict(CONFIGS[args.config])
    batch, steps = args.batch or spec.pop("batch"), args.steps or spec.pop("steps")
    spec.pop("batch", None), spec.pop("steps", None)
    autocast = torch.bfloat16 if args.precision == "bf16" else None

    config = vrnnkit.VRNNConfig(**spec, likelihood="bernoulli")
    model = vrnnkit.VRNN(config).to(device)
    if args.compile:
        model.compile_blocks()
    x = (torch.rand(batch, steps, *config.frame_shape, device=device) > 0.5).float()
    noise = torch.randn(steps, batch, config.z_dim, device=device)
    latent = torch.randn(batch * steps, config.latent_feature_dim, device=device)
    h = torch.randn(batch * steps, config.h_dim, device=device)
    generator = torch.Generator(device="cpu").manual_seed(0)
    every = list(model.parameters())
    blocks = list(model.encoder.parameters()) + list(model.decoder.parameters()) + list(model.likelihood.parameters())

    # The naive loop computes the same objective: check it before timing it.
    with torch.no_grad():
        ours = model(x, generator=torch.Generator().manual_seed(5)).loss
        theirs = naive_loss(model, x, torch.randn(steps, batch, config.z_dim, generator=torch.Generator().manual_seed(5)).to(device))
    assert math.isclose(ours.item(), theirs.item(), rel_tol=1e-4), (ours.item(), theirs.item())

    losses = {
        "vrnnkit": lambda: model(x, generator=generator).loss,
        "naive": lambda: naive_loss(model, x, noise),
        "floor": lambda: floor_loss(model, x, latent, h),
    }
    if args.skip_naive:
        del losses["naive"]
    flops = {name: count_flops(loss) for name, loss in losses.items()}
    steps_of = {"vrnnkit": make_train_step(model, x, generator, args.precision, device)}
    steps_of.update({name: make_step(blocks if name == "floor" else every, loss, autocast, device)
                     for name, loss in losses.items() if name != "vrnnkit"})

    compile_start = time.perf_counter()
    steps_of["vrnnkit"]()  # the first call compiles, with --compile
    first_step = time.perf_counter() - compile_start
    peak_cuda = {}
    for name, step in steps_of.items():
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        timed(step, 2, device)  # warm-up: allocator, optimizer state
        if device.type == "cuda":
            peak_cuda[name] = torch.cuda.max_memory_allocated(device) / 2**20
        if name == "vrnnkit":
            rss_after_ours = peak_rss_mib()
    seconds: dict[str, list[float]] = {name: [] for name in steps_of}
    for _ in range(args.rounds):
        for name, step in steps_of.items():
            seconds[name].append(timed(step, args.iters, device))

    peak = matmul_rate(device)
    print(f"vrnnkit {vrnnkit.__version__}, torch {torch.__version__}, device {device}"
          f"{' (' + torch.cuda.get_device_name(device) + ')' if device.type == 'cuda' else ''}, "
          f"{torch.get_num_threads()} threads, {args.precision}{', compiled' if args.compile else ''}")
    print(f"config {args.config}: frames {tuple(config.frame_shape)}, h {config.h_dim}, z {config.z_dim}, batch {batch}, "
          f"{steps} frames per sequence; {model.num_parameters():,} parameters; "
          f"median of {args.rounds} rounds of {args.iters} steps")
    print(f"first vrnnkit step (compiles with --compile): {first_step:.2f} s")
    print(f"matrix multiply (fp32, 1024x1024): {peak:.0f} GFLOP/s")
    median = {name: statistics.median(times) for name, times in seconds.items()}
    for name, t in median.items():
        rate = flops[name] / t / 1e9
        memory = f", peak CUDA {peak_cuda[name]:.0f} MiB" if name in peak_cuda else ""
        print(f"{name:>8}: {1000 * t:8.1f} ms/step  {batch / t:8.1f} sequences/s  {batch * steps / t:9.0f} frames/s  "
              f"{flops[name] / 1e9:7.2f} GFLOP/step  {rate:6.1f} GFLOP/s ({100 * rate / peak:.0f}% of matmul){memory}")
    print(f"peak resident memory: {rss_after_ours:.0f} MiB after vrnnkit's warm-up, {peak_rss_mib():.0f} MiB at the end")
    if "naive" in median:
        print(f"(a) vrnnkit / naive throughput: {median['naive'] / median['vrnnkit']:.2f}x")
    print(f"(b) vrnnkit step / encoder+decoder floor: {median['vrnnkit'] / median['floor']:.2f}x")


if __name__ == "__main__":
    main()
