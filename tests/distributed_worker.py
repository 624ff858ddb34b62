"""Run by tests/test_distributed.py under torchrun: train with every process, and after every
optimizer step check that all processes hold the same weights.

    python -m torch.distributed.run --standalone --nproc-per-node 2 tests/distributed_worker.py DATA OUT RESULT STEPS [resume] [vrnnkit-group] [diverge]

By default the worker makes the process group itself and destroys it after ``vrnnkit.train``
(a program of the user's); with ``vrnnkit-group``, ``vrnnkit.train`` makes and destroys it. Either
way the summary records the gloo threads left once the group is gone: none, if nothing kept
the group alive, so none can still be running when the interpreter shuts down. ``diverge``
trains with a learning rate that makes the loss non-finite at step 2, and records the error.
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
from pathlib import Path

import torch
import torch.distributed as dist

import vrnnkit


def gloo_threads() -> list[str]:
    """The names of this process's threads that gloo started (Linux's /proc; elsewhere none)."""
    names = []
    for task in Path("/proc/self/task").glob("*"):
        with contextlib.suppress(OSError):
            names.append((task / "comm").read_text().strip())
    return sorted(name for name in names if "gloo" in name)


def main(data: str, out: str, result_path: str, steps: int, flags: list[str]) -> None:
    torch.set_num_threads(1)
    resume, worker_group = "resume" in flags, "vrnnkit-group" not in flags
    if worker_group:
        dist.init_process_group("gloo")
    differences: list[float] = []
    records: list[dict] = []
    during: list[str] = []

    def on_step(step: int, model: torch.nn.Module) -> None:
        world = dist.get_world_size()
        flat = torch.cat([p.detach().flatten() for p in model.parameters()])
        gathered = [torch.empty_like(flat) for _ in range(world)]
        dist.all_gather(gathered, flat)
        differences.append(max((g - gathered[0]).abs().max().item() for g in gathered))
        during[:] = gloo_threads()

    try:
        options = dict(
            steps=steps, every=1, h_dim=16, z_dim=4, batch_size=8, seq_len=6, lr=1e-2, kl_anneal=0,
            val_fraction=0.25, keep=2, device="cpu", layout="NTD",
            output_bias=False,  # the test measures learning from an untrained start
            lr_schedule="constant",  # resumed past its first --steps: a cosine would follow the new total
        )
        if "diverge" in flags:
            options["lr"] = 1e4
        result = vrnnkit.train(
            data, out=out, resume=out if resume else None, on_step=on_step, on_log=records.append,
            **({"steps": steps} if resume else options),
        )
    except vrnnkit.VRNNKitError as error:
        result, failure = None, str(error)
    else:
        failure = None
    finally:
        if worker_group:
            dist.destroy_process_group()
    summary: dict = {"gloo_threads_during": during, "gloo_threads_after": gloo_threads(), "error": failure}
    if records and result is not None:  # rank 0 alone logs
        summary.update({
            "world_size": result.world_size, "step": result.step, "differences": differences,
            "val_loss": [r["val_loss"] for r in records if "val_loss" in r],
            "start": next(r for r in records if r.get("event") == "start"),
        })
    rank = int(os.environ["RANK"])
    with open(result_path if rank == 0 else f"{result_path}.rank{rank}", "w", encoding="utf-8") as handle:
        json.dump(summary, handle)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]), sys.argv[5:])
