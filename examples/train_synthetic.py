"""Train a small VRNN on synthetic video, save it, load it back and sample from it.

The clips are bouncing balls (Sutskever et al.), generated on the spot at 16x16 so that a few
hundred steps on a CPU take well under a minute.

    python examples/train_synthetic.py [--steps 300] [--out runs/synthetic]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch

import vrnnkit
from vrnnkit.data import bouncing_balls


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=300, help="optimiser steps")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--seq-len", type=int, default=10)
    parser.add_argument("--out", type=Path, default=Path("runs/synthetic"))
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    torch.manual_seed(args.seed)
    data = torch.from_numpy(bouncing_balls(512, length=args.seq_len, size=16, seed=args.seed))[:, :, None]
    config = vrnnkit.VRNNConfig(
        frame_shape=(1, 16, 16), h_dim=64, z_dim=8,
        encoder_options={"channels": 16}, decoder_options={"channels": 16},
    )
    model = vrnnkit.VRNN(config)
    optimizer = torch.optim.Adam(model.parameters(), lr=2e-3)
    print(f"VRNN with {model.num_parameters():,} parameters: {config.encoder} encoder, "
          f"{config.decoder} decoder, {config.likelihood} likelihood")

    start = time.perf_counter()
    for step in range(1, args.steps + 1):
        batch = data[torch.randint(len(data), (args.batch_size,))]
        out = model(batch, kl_weight=min(1.0, step / 100))  # KL annealing over the first 100 steps
        optimizer.zero_grad(set_to_none=True)
        out.loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 10.0)  # before the step, where it acts
        optimizer.step()
        if step % 50 == 0 or step == args.steps:
            print(f"step {step:4d}  loss {out.loss.item():8.2f}  nll {out.nll.item():8.2f}  "
                  f"kl {out.kl.item():6.2f}  {out.bits_per_dim.item():.4f} bits/dim  "
                  f"{time.perf_counter() - start:5.1f}s")

    args.out.mkdir(parents=True, exist_ok=True)
    path = vrnnkit.save(model, args.out / "model.safetensors", metadata={"example": "train_synthetic"})
    loaded = vrnnkit.load(path)
    clips = loaded.sample(4, args.seq_len, generator=torch.Generator().manual_seed(0))
    print(f"saved {path} ({path.stat().st_size / 1e6:.1f} MB); reloaded it and sampled clips of shape "
          f"{tuple(clips.shape)}, mean pixel {clips.mean().item():.3f} (data: {data.mean().item():.3f})")


if __name__ == "__main__":
    main()
