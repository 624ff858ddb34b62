"""Cost of evaluation at 64x64 with the default convolutional VRNN (untrained: cost does not
depend on the weights).

    python benchmarks/bench_eval.py [--size 64] [--iwae-sequences 32] [--parts predict,iwae,growth]

(a) predict: ``samples`` futures of ``horizon`` frames for one sequence after ``context`` real
    frames (100 x 20 after 5 by default), then the PSNR/SSIM metrics of those frames.
(b) IWAE: the K=100 bound on ``--iwae-sequences`` sequences of ``--seq-len`` frames, in batches
    of ``--batch-size``, with ``VRNN.log_likelihood``'s chunking (``--chunk-size``, by default
    ``VRNN.iwae_chunk_size``: sized by frame elements): time and peak resident memory. The
    peak depends on the batch and chunk sizes, not on the number of sequences; the time grows
    linearly with it, so the default is 32 sequences (about 1.5 minutes on a 2-core CPU),
    not 256 (about 11 minutes): pass --iwae-sequences 256 for the full size.
(c) growth: IWAE time for two K values and two sequence counts at a fixed chunk size, to
    check that the cost is linear in both (time / (sequences x K) stays flat).
(d) fivo (not in the default parts): the FIVO bound, K=``--k``, of ``--fivo-sequences`` piano
    rolls of ``--fivo-steps`` steps with the music recipe's model (examples/polyphonic.toml:
    88 keys, ar-bernoulli with 4,096 hidden units, h 256, z 32, dropout 0.2), in eval mode:
    as evaluation runs it (one pass, the bound summed in the time loop) and the two-pass
    estimate training uses (the loop, then the prior, decoder and likelihood again over all
    steps), side by side on the same draws; the two bounds must agree.
(e) made (not in the default parts): the log-probability of ``--made-rows`` piano-roll steps
    under the music recipe's ar-bernoulli likelihood (4,096 hidden units), without gradients,
    as evaluation runs it (rows in chunks of ``CHUNK_ROWS``) and in one pass over every row.
"""

from __future__ import annotations

import argparse
import resource
import time
from pathlib import Path

import torch

import vrnnkit
from vrnnkit.evaluation import prediction_metrics, ssim

STATUS = Path("/proc/self/status")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=int, default=64, help="frame height and width")
    parser.add_argument("--parts", default="predict,iwae,growth", help="which parts to run, comma-separated")
    parser.add_argument("--context", type=int, default=5)
    parser.add_argument("--horizon", type=int, default=20)
    parser.add_argument("--samples", type=int, default=100, help="futures per sequence in (a)")
    parser.add_argument("--repeats", type=int, default=3, help="timed repeats of (a), after one warm-up")
    parser.add_argument("--iwae-sequences", type=int, default=32)
    parser.add_argument("--k", type=int, default=100, help="importance samples in (b)")
    parser.add_argument("--seq-len", type=int, default=10)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--chunk-size", type=int, default=None)
    parser.add_argument("--growth-k", type=int, nargs=2, default=[25, 50])
    parser.add_argument("--growth-sequences", type=int, nargs=2, default=[16, 32])
    parser.add_argument("--made-rows", type=int, default=3000, help="rows scored at once in (e)")
    parser.add_argument("--fivo-sequences", type=int, default=16, help="piano rolls in (d)")
    parser.add_argument("--fivo-steps", type=int, default=100, help="steps of each piano roll in (d)")
    parser.add_argument("--growth-chunk-size", type=int, default=5,
                        help="a fixed chunk size for (c), dividing both K values, so that only K and the sequence count vary")
    args = parser.parse_args()
    parts = set(args.parts.split(","))

    torch.manual_seed(0)
    model = vrnnkit.VRNN(vrnnkit.VRNNConfig(frame_shape=(1, args.size, args.size))).eval()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; default conv VRNN at "
          f"{args.size}x{args.size}, {model.num_parameters():,} parameters")
    # predict first: after (b)'s multi-GB chunks, glibc hands memory back and forth with the
    # kernel and later timings suffer from page faults. (b) resets the peak it reports.
    if "predict" in parts:
        bench_predict(model, args)
    if "iwae" in parts:
        bench_iwae(model, args)
    if "growth" in parts:
        bench_growth(model, args)
    if "fivo" in parts:
        bench_fivo(args)
    if "made" in parts:
        bench_made(args)


def bench_made(args: argparse.Namespace) -> None:
    from vrnnkit.blocks import autoregressive

    torch.manual_seed(0)
    block = autoregressive.AutoregressiveBernoulli((88,), hidden=4096)
    params = torch.randn(args.made_rows, block.params_per_element, 88)
    rolls = (torch.rand(args.made_rows, 88) < 0.05).float()
    chunk = autoregressive.CHUNK_ROWS
    print(f"\n(e) ar-bernoulli log p of {args.made_rows} rows of 88 keys, 4,096 hidden units, no gradients "
          f"(best of {args.repeats}):")
    results = {}
    with torch.no_grad():
        for name, rows in (("chunks", chunk), ("one pass", 10**9)) * args.repeats:
            autoregressive.CHUNK_ROWS = rows
            start = time.perf_counter()
            value = block.log_prob(params, rolls)
            seconds = time.perf_counter() - start
            results[name] = (min(seconds, results.get(name, (float("inf"),))[0]), value)
    autoregressive.CHUNK_ROWS = chunk
    gap = float((results["chunks"][1] - results["one pass"][1]).abs().max())
    print(f"    chunks of {chunk} rows {results['chunks'][0]:.3f} s, one pass {results['one pass'][0]:.3f} s: "
          f"{results['one pass'][0] / results['chunks'][0]:.2f}x; largest difference {gap:.1e}")


def bench_fivo(args: argparse.Namespace) -> None:
    from vrnnkit.model import objectives

    dropout = {"dropout": 0.2}
    torch.manual_seed(0)
    model = vrnnkit.VRNN(vrnnkit.VRNNConfig(
        frame_shape=(88,), h_dim=256, z_dim=32, likelihood="ar-bernoulli", likelihood_options={"hidden": 4096},
        encoder_options=dropout, decoder_options=dropout, prior_options=dropout)).eval()
    rolls = (torch.rand(args.fivo_sequences, args.fivo_steps, 88, generator=torch.Generator().manual_seed(1)) < 0.05).float()
    mask = torch.ones(rolls.shape[:2])
    print(f"\n(d) FIVO K={args.k} on {args.fivo_sequences} piano rolls x {args.fivo_steps} steps, the music recipe's "
          f"model ({model.num_parameters():,} parameters), eval mode:")
    timings = {}
    with torch.no_grad():
        for name, scored in (("one pass (evaluation)", True), ("two passes", False), ("one pass again", True)):
            start = time.perf_counter()
            bound = objectives._fivo(model, rolls, mask, args.k, 1.0, objectives.DEFAULT_THRESHOLD,
                                     torch.Generator().manual_seed(0), scored_only=scored)[0]
            timings[name] = (time.perf_counter() - start, bound)
            print(f"    {name:22s} {timings[name][0]:7.2f} s   mean bound {float(bound.mean()):.4f} nats per sequence")
    gap = float((timings["two passes"][1] - timings["one pass (evaluation)"][1]).abs().max())
    one = min(timings["one pass (evaluation)"][0], timings["one pass again"][0])
    print(f"    two passes / one pass: {timings['two passes'][0] / one:.2f}x; largest difference between the bounds {gap:.2e}")


def bench_predict(model: vrnnkit.VRNN, args: argparse.Namespace) -> None:
    video = torch.rand(1, args.context + args.horizon, 1, args.size, args.size)
    generator = torch.Generator().manual_seed(0)
    model.predict(video[:, : args.context], 2, 2, generator=generator)  # warm-up
    times = []
    for _ in range(args.repeats):
        start = time.perf_counter()
        futures = model.predict(video[:, : args.context], args.horizon, args.samples, generator=generator)
        times.append(time.perf_counter() - start)
    frames = args.samples * args.horizon
    best = min(times)
    print(f"\n(a) predict {args.samples} samples x {args.horizon} frames after {args.context}, one sequence: "
          f"{best:.2f} s best of {args.repeats} ({', '.join(f'{t:.2f}' for t in times)}), "
          f"{1000 * best / frames:.2f} ms per frame")
    truth = video[:, args.context :]
    start = time.perf_counter()
    prediction_metrics(futures, truth, video[:, args.context - 1])
    print(f"    prediction_metrics on those {frames} frames (PSNR, SSIM, best/mean of N, baseline): "
          f"{time.perf_counter() - start:.2f} s")
    flat, target = futures.flatten(0, 2), truth.expand_as(futures[:, 0]).repeat(args.samples, 1, 1, 1, 1).flatten(0, 1)
    start = time.perf_counter()
    ssim(flat, target)
    ours = time.perf_counter() - start
    line = f"    ssim alone: {ours:.2f} s ({1000 * ours / frames:.2f} ms per frame)"
    try:
        from torchmetrics.functional.image import structural_similarity_index_measure
    except ImportError:
        print(line + "; torchmetrics not installed, no comparison")
        return
    start = time.perf_counter()
    structural_similarity_index_measure(flat, target, data_range=1.0, reduction="none")
    theirs = time.perf_counter() - start
    print(line + f"; torchmetrics {theirs:.2f} s ({1000 * theirs / frames:.2f} ms per frame, float32, padded)")


def bench_iwae(model: vrnnkit.VRNN, args: argparse.Namespace) -> None:
    steps, batch = args.seq_len, min(args.batch_size, args.iwae_sequences)
    chunk = args.chunk_size or model.iwae_chunk_size(batch, steps, args.k)
    before = _memory()
    reset = _reset_peak()
    seconds = _time_iwae(model, args.iwae_sequences, args.k, args)
    after = _memory()
    if after["peak_source"] == "VmHWM":
        after["peak_source"] = "VmHWM, reset before (b)" if reset else "VmHWM, since the process started"
    rate = args.iwae_sequences * args.k * steps / seconds
    print(f"\n(b) IWAE K={args.k} on {args.iwae_sequences} sequences x {steps} frames at "
          f"{args.size}x{args.size}, batch {batch}, chunks of {chunk} samples "
          f"({batch * chunk * steps} frames decoded at once): {seconds:.1f} s, "
          f"{rate:.0f} frame-samples/s, {seconds / args.iwae_sequences:.2f} s per sequence "
          f"(256 sequences: about {256 * seconds / args.iwae_sequences / 60:.1f} min)")
    print(f"    resident memory: {before['rss']:.0f} MiB before, peak {after['peak']:.0f} MiB "
          f"during ({after['peak_source']}), {after['rss']:.0f} MiB after")


def bench_growth(model: vrnnkit.VRNN, args: argparse.Namespace) -> None:
    chunk = args.growth_chunk_size
    print(f"\n(c) IWAE cost growth ({args.seq_len} frames, batch {args.batch_size}, chunks of {chunk} samples):")
    print("    sequences      K   seconds   ms per (sequence x K)")
    for sequences in args.growth_sequences:
        for k in args.growth_k:
            seconds = _time_iwae(model, sequences, k, args, chunk)
            print(f"    {sequences:9d} {k:6d} {seconds:9.2f} {1000 * seconds / (sequences * k):12.2f}")


def _time_iwae(
    model: vrnnkit.VRNN, sequences: int, k: int, args: argparse.Namespace, chunk_size: int | None = None
) -> float:
    data = torch.rand(sequences, args.seq_len, 1, args.size, args.size)
    generator = torch.Generator().manual_seed(0)
    start = time.perf_counter()
    for first in range(0, sequences, args.batch_size):
        batch = data[first : first + args.batch_size]
        model.log_likelihood(batch, k, chunk_size=chunk_size or args.chunk_size, generator=generator)
    return time.perf_counter() - start


def _reset_peak() -> bool:
    """Reset the kernel's resident high-water mark (VmHWM), where Linux allows it."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        return False
    return True


def _memory() -> dict[str, float | str]:
    """Resident memory now and its peak, in MiB: VmRSS and VmHWM (which ``_reset_peak`` resets)
    where /proc has them, else ru_maxrss (the peak over the whole process)."""
    if STATUS.exists():
        fields = dict(line.split(":", 1) for line in STATUS.read_text().splitlines() if ":" in line)
        kib = {key: int(fields[key].split()[0]) for key in ("VmRSS", "VmHWM")}
        return {"rss": kib["VmRSS"] / 1024, "peak": kib["VmHWM"] / 1024, "peak_source": "VmHWM"}
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {"rss": float("nan"), "peak": peak, "peak_source": "ru_maxrss, whole process"}


if __name__ == "__main__":
    main()
