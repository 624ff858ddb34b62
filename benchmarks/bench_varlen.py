"""The cost of training on sequences of different lengths: real steps per second of a padded,
masked batch against an equal-length batch holding the same number of real steps.

The variable-length batches are JSB Chorales' training sequences (../shared/data/jsb-chorales)
when the file is there, otherwise lengths drawn like them (40..160 steps); batches come
shuffled (``--pool-batches 1``) or bucketed by length (the default). Each padded batch
(B, T_max) is timed beside an equal-length batch (B, T_eq) with B * T_eq its number of real
steps, on the same model (MLP/GRU VRNN, 88-dim Bernoulli). The target is a ratio of at most 1.3.

    OMP_NUM_THREADS=1 python benchmarks/bench_varlen.py --h-dim 128 --batch-size 16

``--through-train`` times ``vrnnkit.api.train`` itself instead (its batching, masks and
``train_step``): whole epochs of JSB train (``--seq-len 0``, bucketed; 13,807 real steps an
epoch) against an equal-length ``.npy`` of 229 sequences of 60 steps (the mean length) in
windows of 60, real steps per second of the training loop without validation and saving.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch

from vrnnkit import VRNN, VRNNConfig
from vrnnkit.data.music import load_piano_roll_json
from vrnnkit.data.varlen import LengthBucketSampler, VariableLengthDataset, pad_collate

JSB = Path(__file__).resolve().parents[2] / "shared" / "data" / "jsb-chorales" / "jsb-chorales-quarter.json"


def _sequences(rng: np.random.Generator) -> list[np.ndarray]:
    if JSB.exists():
        return load_piano_roll_json(JSB, "train")
    return [(rng.random((int(n), 88)) < 0.05).astype(np.float32) for n in rng.integers(40, 161, 229)]


def _train_step(model: VRNN, optimizer: torch.optim.Optimizer, x: torch.Tensor, mask: torch.Tensor | None) -> None:
    loss = model(x, mask=mask).loss
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--h-dim", type=int, default=128)
    parser.add_argument("--z-dim", type=int, default=32)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--pool-batches", type=int, default=50, help="1: no length bucketing")
    parser.add_argument("--batches", type=int, default=15, help="batches timed (after 2 warm-up pairs)")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--through-train", action="store_true", help="time vrnnkit.api.train on both kinds of data")
    parser.add_argument("--epochs", type=int, default=8, help="--through-train: epochs of each")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if args.through_train:
        _through_train(args)
        return
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    dataset = VariableLengthDataset(_sequences(rng))
    model = VRNN(VRNNConfig(frame_shape=(88,), h_dim=args.h_dim, z_dim=args.z_dim))
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-4)
    sampler = LengthBucketSampler(dataset.lengths, args.batch_size, pool_batches=args.pool_batches)
    pairs = []
    for indices in sampler:
        x, mask = pad_collate([dataset[i] for i in indices])
        real = int(mask.sum())
        equal = torch.from_numpy((rng.random((len(indices), max(1, round(real / len(indices))), 88)) < 0.05).astype(np.float32))
        pairs.append((x, mask, equal))
    pairs = pairs[: args.batches + 2]
    padded_s = equal_s = 0.0
    real_steps = equal_steps = padded_steps = 0
    for i, (x, mask, equal) in enumerate(pairs):
        # alternate the two so that a change in the machine's load hits both alike
        start = time.perf_counter()
        _train_step(model, optimizer, x, mask)
        middle = time.perf_counter()
        _train_step(model, optimizer, equal, None)
        end = time.perf_counter()
        if i >= 2:
            padded_s += middle - start
            equal_s += end - middle
            real_steps += int(mask.sum())
            padded_steps += mask.numel()
            equal_steps += equal.shape[0] * equal.shape[1]
    variable_rate, equal_rate = real_steps / padded_s, equal_steps / equal_s
    print(f"model h {args.h_dim} z {args.z_dim}, batch {args.batch_size}, {args.threads} thread(s), "
          f"{'bucketed' if args.pool_batches > 1 else 'shuffled'} batches, data: {'JSB train' if JSB.exists() else 'synthetic'}")
    print(f"padding: {1 - real_steps / padded_steps:.1%} of the padded batches' steps")
    print(f"variable length: {variable_rate:,.0f} real steps/s; equal length: {equal_rate:,.0f} steps/s")
    print(f"cost ratio (equal / variable steps/s): {equal_rate / variable_rate:.2f}x (target <= 1.3x)")


def _through_train(args: argparse.Namespace) -> None:
    import tempfile

    from vrnnkit import api

    if not JSB.exists():
        raise SystemExit(f"{JSB} is missing")
    rng = np.random.default_rng(0)
    common = {"h_dim": args.h_dim, "z_dim": args.z_dim, "batch_size": args.batch_size, "keep": 0, "val_fraction": 0.0}
    with tempfile.TemporaryDirectory() as folder:
        equal = Path(folder) / "equal.npy"
        np.save(equal, (rng.random((229, 60, 88)) < 0.05).astype(np.float32))
        per_epoch = -(-229 // args.batch_size)  # bucketed batches of JSB train, the last one short
        steps = per_epoch * args.epochs
        varlen = api.train(str(JSB), out=Path(folder) / "v", steps=steps, every=steps, seq_len=0, **common)
        real_varlen = 13807 * args.epochs
        steps_eq = (229 // args.batch_size) * args.epochs
        fixed = api.train(str(equal), out=Path(folder) / "e", steps=steps_eq, every=steps_eq, seq_len=60, layout="NTD", **common)
        real_fixed = steps_eq * args.batch_size * 60
    rates = []
    for name, result, real in (("variable length (JSB train, bucketed)", varlen, real_varlen), ("equal length (60 steps)", fixed, real_fixed)):
        seconds = result.timings["loop"] - result.timings["periodic"]
        rates.append(real / seconds)
        print(f"{name}: {result.step} optimizer steps, {real:,} real steps in {seconds:.1f} s = {rates[-1]:,.0f} real steps/s")
    print(f"through vrnnkit.api.train, {args.threads} thread(s), h {args.h_dim} z {args.z_dim}, batch {args.batch_size}: "
          f"cost ratio (equal / variable real steps/s) {rates[1] / rates[0]:.2f}x (target <= 1.3x)")


if __name__ == "__main__":
    main()
