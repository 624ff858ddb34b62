"""Where one training step of the vector model spends its time.

The model is the classic small one of ``bench_mlp_loop.py``: 28-dimensional frames, h 100,
z 16, one-layer GRU, 28 steps, batch 128, Bernoulli decoder, Adam with clipping. The script
times the step's phases with a synchronous wall clock (encoder and posterior/GRU inputs, the
time loop's forward, decoder and loss, the whole backward, the time loop's backward alone,
clipping and Adam), then runs ``torch.profiler`` over a few steps and prints the operations
by self time, so that the loop's share and the cost of each kind of kernel are both visible.

    OMP_NUM_THREADS=1 python benchmarks/profile_step.py --threads 1 [--steps 20] [--top 15]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
from torch.profiler import ProfilerActivity, profile

import vrnnkit
from vrnnkit.model import fused

X_DIM, H_DIM, Z_DIM, STEPS = 28, 100, 16, 28


class _Clock:
    """Wall time of the time loop's forward and backward, from inside ``fused``."""

    def __init__(self) -> None:
        self.forward: list[float] = []
        self.backward: list[float] = []
        self._forward, self._backward = fused._FusedFilter.forward, fused._FusedFilter.backward

    def install(self) -> None:
        def timed(store: list[float], fn):
            def wrapper(*args, **kwargs):
                start = time.perf_counter()
                out = fn(*args, **kwargs)
                store.append(time.perf_counter() - start)
                return out
            return staticmethod(wrapper)

        fused._FusedFilter.forward = timed(self.forward, self._forward)
        fused._FusedFilter.backward = timed(self.backward, self._backward)

    def remove(self) -> None:
        fused._FusedFilter.forward = staticmethod(self._forward)
        fused._FusedFilter.backward = staticmethod(self._backward)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--steps", type=int, default=20, help="timed training steps")
    parser.add_argument("--top", type=int, default=15, help="operations listed")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    config = vrnnkit.VRNNConfig(frame_shape=(X_DIM,), h_dim=H_DIM, z_dim=Z_DIM, encoder="mlp", decoder="mlp",
                                likelihood="bernoulli")
    model = vrnnkit.VRNN(config)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3, fused=True)
    x = (torch.rand(args.batch, STEPS, X_DIM) > 0.5).float()
    phases: dict[str, list[float]] = {"forward": [], "backward": [], "clip + Adam": [], "step": []}

    def step() -> None:
        t0 = time.perf_counter()
        optimizer.zero_grad(set_to_none=True)
        loss = model(x).loss
        t1 = time.perf_counter()
        loss.backward()
        t2 = time.perf_counter()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 10.0)
        optimizer.step()
        t3 = time.perf_counter()
        for name, value in zip(phases, (t1 - t0, t2 - t1, t3 - t2, t3 - t0), strict=True):
            phases[name].append(value)

    for _ in range(5):
        step()
    for values in phases.values():
        values.clear()
    clock = _Clock()
    clock.install()
    try:
        for _ in range(args.steps):
            step()
    finally:
        clock.remove()
    median = {name: statistics.median(values) * 1e3 for name, values in phases.items()}
    loop_f, loop_b = statistics.median(clock.forward) * 1e3, statistics.median(clock.backward) * 1e3
    total = median["step"]
    print(f"torch {torch.__version__}, {torch.get_num_threads()} thread(s); batch {args.batch}, {STEPS} steps, "
          f"x {X_DIM}, h {H_DIM}, z {Z_DIM}; {model.num_parameters():,} parameters; median of {args.steps} steps")
    rows = [
        ("whole step", total),
        ("forward", median["forward"]),
        ("  time loop forward (fused)", loop_f),
        ("  rest: encoder, precompute, prior, decoder, loss", median["forward"] - loop_f),
        ("backward", median["backward"]),
        ("  time loop backward (fused)", loop_b),
        ("  rest: autograd of the batched blocks", median["backward"] - loop_b),
        ("clip + Adam", median["clip + Adam"]),
    ]
    print(f"{'phase':<52}{'ms':>8}{'share':>8}")
    for name, ms in rows:
        print(f"{name:<52}{ms:>8.2f}{ms / total:>8.0%}")
    print(f"time loop (forward + backward): {loop_f + loop_b:.2f} ms, {(loop_f + loop_b) / total:.0%} of the step")

    floor(step, model, args.batch)
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for _ in range(5):
            step()
    print(f"\ntorch.profiler over 5 steps (profiler overhead included), top {args.top} by self CPU time:")
    print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=args.top, max_name_column_width=36))


def matmul_rate(rows: int, inner: int, cols: int, repeats: int = 200) -> float:
    """GFLOP/s of one (rows, inner) x (inner, cols) fp32 product on this machine, now."""
    a, b = torch.randn(rows, inner), torch.randn(inner, cols)
    for _ in range(10):
        a.mm(b)
    start = time.perf_counter()
    for _ in range(repeats):
        a.mm(b)
    return 2 * rows * inner * cols * repeats / (time.perf_counter() - start) / 1e9


def floor(step, model: vrnnkit.VRNN, batch: int) -> None:
    """The step's FLOPs (``torch.utils.flop_counter``) against the rate of its products. Counted
    on the autograd loop, the same products: the counter misses the fused loop's in-place ones."""
    from torch.utils.flop_counter import FlopCounterMode

    model.fused_loop = False
    with FlopCounterMode(display=False) as counter:
        step()
    model.fused_loop = True
    flops = counter.get_total_flops()
    rows = batch * STEPS
    batched, per_step, large = matmul_rate(rows, 200, 100, 20), matmul_rate(batch, 100, 400), matmul_rate(1024, 1024, 1024, 5)
    print(f"\n{flops / 1e9:.2f} GFLOP per step (matrix products). Rates now: ({rows}x200)x(200x100) {batched:.0f} GFLOP/s, "
          f"({batch}x100)x(100x400) {per_step:.0f} GFLOP/s, 1024^3 {large:.0f} GFLOP/s")
    print(f"arithmetic floor of the step at the batched rate: {1e3 * flops / batched / 1e9:.1f} ms "
          f"(at the 1024^3 rate: {1e3 * flops / large / 1e9:.1f} ms)")


if __name__ == "__main__":
    main()
