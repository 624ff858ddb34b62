"""Run by tests/test_distributed.py under torchrun: train with every process, and after every
optimizer step check that all processes hold the same weights.

    python -m torch.distributed.run --standalone --nproc-per-node 2 tests/distributed_worker.py DATA OUT RESULT STEPS
"""

from __future__ import annotations

import json
import sys

import torch
import torch.distributed as dist

import vrnnkit


def main(data: str, out: str, result_path: str, steps: int, resume: bool) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo")
    rank, world = dist.get_rank(), dist.get_world_size()
    differences: list[float] = []
    records: list[dict] = []

    def on_step(step: int, model: torch.nn.Module) -> None:
        flat = torch.cat([p.detach().flatten() for p in model.parameters()])
        gathered = [torch.empty_like(flat) for _ in range(world)]
        dist.all_gather(gathered, flat)
        differences.append(max((g - gathered[0]).abs().max().item() for g in gathered))

    try:
        options = dict(
            steps=steps, every=1, h_dim=16, z_dim=4, batch_size=8, seq_len=6, lr=1e-2, kl_anneal=0,
            val_fraction=0.25, keep=2, device="cpu", layout="NTD",
            output_bias=False,  # the test measures learning from an untrained start
            lr_schedule="constant",  # resumed past its first --steps: a cosine would follow the new total
        )
        result = vrnnkit.train(
            data, out=out, resume=out if resume else None, on_step=on_step, on_log=records.append,
            **({"steps": steps} if resume else options),
        )
        if rank == 0:
            summary = {
                "world_size": result.world_size, "step": result.step, "differences": differences,
                "val_loss": [r["val_loss"] for r in records if "val_loss" in r],
                "start": next(r for r in records if r.get("event") == "start"),
            }
            with open(result_path, "w", encoding="utf-8") as handle:
                json.dump(summary, handle)
    finally:
        dist.destroy_process_group()


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]), len(sys.argv) > 5 and sys.argv[5] == "resume")
