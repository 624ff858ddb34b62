"""The cost of a training step on each objective: ELBO, IWAE and FIVO with K particles.

Times ``vrnnkit.training.train_step`` (forward, backward, clipping, Adam) on the same padded
batches of JSB Chorales, with the model of ``examples/jsb_chorales_factorised.toml`` (the JSB
recipe with the factorised Bernoulli, on which docs/ report these costs), side by side in one
run, interleaved so that a busy machine slows every objective alike. Prints seconds per step
and the ratio of a K-particle step to an ELBO step (issue target: at most 0.6 K), and for IWAE
also with the hand-written fused loop turned off (the autograd loop) and with the doubly
reparameterised gradient (``--gradient dreg``).

    OMP_NUM_THREADS=1 python benchmarks/bench_objectives.py --particles 4
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import numpy as np
import torch

from vrnnkit.data.varlen import pad_collate
from vrnnkit.data.varlen_source import read_split
from vrnnkit.model import VRNN
from vrnnkit.training import TrainConfig, make_scaler, train_step
from vrnnkit.training.config import read_config

ROOT = Path(__file__).resolve().parents[1]
JSB = ROOT.parent / "shared" / "data" / "jsb-chorales" / "jsb-chorales-quarter.json"
RECIPE = ROOT / "examples" / "jsb_chorales_factorised.toml"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=JSB)
    parser.add_argument("--particles", type=int, default=4)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=20, help="timed steps per objective")
    args = parser.parse_args()
    if not args.data.is_file():
        raise SystemExit(f"{args.data} is missing: the JSB Chorales file (see ../shared/data/README.md)")
    sequences, _ = read_split(str(args.data), "train")
    rng = np.random.default_rng(0)
    batches = [pad_collate([torch.as_tensor(np.asarray(sequences[i], np.float32)) for i in rng.choice(len(sequences), args.batch_size)])
               for _ in range(4)]
    k = args.particles
    variants = {  # objective, particles, fused loop, gradient
        "elbo": ("elbo", 1, True, "reparam"), f"iwae K={k}": ("iwae", k, True, "reparam"),
        f"iwae K={k}, autograd loop": ("iwae", k, False, "reparam"), f"iwae K={k}, dreg": ("iwae", k, True, "dreg"),
        f"fivo K={k}": ("fivo", k, True, "reparam"),
    }
    setups = {}
    for name, (objective, particles, fused, gradient) in variants.items():
        config = TrainConfig.from_dict({**read_config(RECIPE), "objective": objective, "particles": particles, "gradient": gradient})
        torch.manual_seed(0)
        model = VRNN(config.model_config((88,)))
        model.fused_loop = fused
        setups[name] = (model, torch.optim.Adam(model.parameters(), lr=1e-3), config)
    times: dict[str, list[float]] = {name: [] for name in variants}
    steps = sum(int(mask.sum()) for _, mask in batches) / len(batches)
    for repeat in range(args.repeats + 2):  # two warm-up rounds
        for name, (model, optimizer, config) in setups.items():
            x, mask = batches[repeat % len(batches)]
            start = time.perf_counter()
            train_step(model, x, optimizer, make_scaler(config, torch.device("cpu")), config, step=1000, mask=mask)
            if repeat >= 2:
                times[name].append(time.perf_counter() - start)
    elbo = statistics.median(times["elbo"])
    print(f"JSB Chorales, {examples_name()}: batch {args.batch_size} (about {steps:.0f} real steps per batch), "
          f"{torch.get_num_threads()} thread(s), median of {args.repeats} steps each, interleaved")
    print(f"{'objective':<28}{'s/step':>10}{'x ELBO':>9}{'/ K':>8}")
    for name, values in times.items():
        seconds = statistics.median(values)
        particles = variants[name][1]
        print(f"{name:<28}{seconds:>10.3f}{seconds / elbo:>9.2f}{seconds / elbo / particles:>8.2f}")


def examples_name() -> str:
    return str(RECIPE.relative_to(ROOT))


if __name__ == "__main__":
    main()
