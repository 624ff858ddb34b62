"""Benchmarks of vrnnkit.data: bouncing-balls generation speed, and the memory used to iterate a
large memory-mapped .npy file.

    python benchmarks/bench_data.py                   # 10,000 x 20 x 32 x 32 balls, 1 GB file
    python benchmarks/bench_data.py --file-gb 0.2     # a smaller file
    python benchmarks/bench_data.py --skip-balls

Targets: balls under 30 s on a 2-core CPU; iterating the file adds under 300 MB of resident
memory. The file goes into a temporary folder that is removed afterwards.
"""

from __future__ import annotations

import argparse
import resource
import tempfile
import time
from pathlib import Path

import numpy as np
from torch.utils.data import DataLoader

from vrnnkit.data import WindowDataset, bouncing_balls, open_sequences

FRAMES, SIDE = 20, 64  # Moving-MNIST-sized sequences
WRITE_CHUNK = 256  # sequences written at a time, so that writing the file stays small too


def resident_mb(field: str) -> float:
    """VmRSS (now) or VmHWM (peak) of this process in MB, from /proc/self/status."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"{field} not in /proc/self/status (Linux only)")


def reset_peak() -> None:
    """Reset VmHWM to the current VmRSS (Linux 4.0+), so the peak covers only what follows."""
    Path("/proc/self/clear_refs").write_text("5")


def bench_balls(count: int, length: int, size: int) -> None:
    start = time.perf_counter()
    videos = bouncing_balls(count, length=length, size=size, seed=0)
    seconds = time.perf_counter() - start
    print(
        f"bouncing_balls: {count} x {length} x {size} x {size} in {seconds:.2f} s "
        f"({count / seconds:,.0f} sequences/s, {videos.nbytes / 2**20:.0f} MB float32)"
    )


def write_npy(path: Path, gigabytes: float) -> tuple[int, ...]:
    count = int(gigabytes * 2**30) // (FRAMES * SIDE * SIDE)
    shape = (count, FRAMES, SIDE, SIDE)
    rng = np.random.default_rng(0)
    with path.open("wb") as file:
        np.lib.format.write_array_header_1_0(
            file, {"descr": "|u1", "fortran_order": False, "shape": shape}
        )
        for first in range(0, count, WRITE_CHUNK):
            rows = min(WRITE_CHUNK, count - first)
            file.write(rng.integers(0, 256, (rows, *shape[1:]), dtype=np.uint8).tobytes())
    return shape


def bench_memory_mapped(gigabytes: float, batch_size: int, workers: int) -> None:
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "videos.npy"
        shape = write_npy(path, gigabytes)
        size_mb = path.stat().st_size / 2**20
        dataset = WindowDataset(open_sequences(path, layout="NTHW"), seq_len=FRAMES)
        loader = DataLoader(dataset, batch_size=batch_size, num_workers=workers)
        reset_peak()
        before = resident_mb("VmRSS")
        start = time.perf_counter()
        total = 0.0
        for batch in loader:
            total += float(batch.sum())
        seconds = time.perf_counter() - start
        growth = resident_mb("VmHWM") - before
    # Workers are forked copies of this process; their peak includes the inherited interpreter.
    worker_peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    workers_note = f", largest worker peak RSS {worker_peak:.0f} MB" if workers else ""
    print(
        f"memory-mapped .npy: {size_mb:,.0f} MB file {shape} uint8, {len(dataset)} windows "
        f"in {seconds:.1f} s ({size_mb / seconds:,.0f} MB/s, batch {batch_size}, "
        f"{workers} workers); peak RSS growth {growth:.0f} MB "
        f"(interpreter at {before:.0f} MB){workers_note}; mean value {total / np.prod(shape):.4f}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--balls", type=int, default=10_000, help="sequences to generate")
    parser.add_argument("--length", type=int, default=20, help="frames per ball sequence")
    parser.add_argument("--size", type=int, default=32, help="ball frame side in pixels")
    parser.add_argument("--file-gb", type=float, default=1.0, help="size of the .npy file")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--workers", type=int, default=0, help="DataLoader workers")
    parser.add_argument("--skip-balls", action="store_true")
    parser.add_argument("--skip-file", action="store_true")
    args = parser.parse_args()
    # The file benchmark runs first: the ball videos would otherwise sit in memory during it.
    if not args.skip_file:
        bench_memory_mapped(args.file_gb, args.batch_size, args.workers)
    if not args.skip_balls:
        bench_balls(args.balls, args.length, args.size)


if __name__ == "__main__":
    main()
