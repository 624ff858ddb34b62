"""Polyphonic music: JSB Chorales in nats per time step, beside the published VRNN-family figures.

Trains through ``vrnnkit.api.train`` with ``examples/jsb_chorales.toml``, exactly as

    vrnnkit train ../shared/data/jsb-chorales/jsb-chorales-quarter.json --config examples/jsb_chorales.toml --out runs/jsb
    vrnnkit eval ../shared/data/jsb-chorales/jsb-chorales-quarter.json --ckpt runs/jsb/best.safetensors --split test

runs it (the ``train`` split trains, ``valid`` picks ``best.safetensors``), then scores the best
checkpoint on valid and test: the ELBO, the IWAE bound and the FIVO bound (K = 100 each), each
the sum over the split's sequences divided by its number of real time steps. Prints the model
size, the wall times and the thread count; ``--json`` saves everything.

    OMP_NUM_THREADS=1 python benchmarks/bench_polyphonic.py --out runs/jsb-bench --json runs/jsb-bench.json

``--objective iwae|fivo --particles K`` trains the same recipe on a tighter bound (issue 12's
comparison); ``--table A.json B.json C.json`` prints the objectives x bounds table of saved runs:

    OMP_NUM_THREADS=1 python benchmarks/bench_polyphonic.py --out runs/jsb-elbo --json runs/jsb-elbo.json
    OMP_NUM_THREADS=1 python benchmarks/bench_polyphonic.py --objective iwae --particles 4 --out runs/jsb-iwae --json runs/jsb-iwae.json
    OMP_NUM_THREADS=1 python benchmarks/bench_polyphonic.py --objective fivo --particles 4 --out runs/jsb-fivo --json runs/jsb-fivo.json
    python benchmarks/bench_polyphonic.py --table runs/jsb-elbo.json runs/jsb-iwae.json runs/jsb-fivo.json

Published lower bounds on the JSB test log-likelihood (nats per time step; from
``../shared/data/jsb-chorales/README.md``): VRNN (1-layer LSTM of 32 units, z 32) trained on
the ELBO -8.69, on the IWAE bound -8.01, on FIVO -7.51; the Deep Markov Model -6.93. Measured
figures of this script are in docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from vrnnkit import api

ROOT = Path(__file__).resolve().parents[1]
JSB = ROOT.parent / "shared" / "data" / "jsb-chorales" / "jsb-chorales-quarter.json"
RECIPE = ROOT / "examples" / "jsb_chorales.toml"
PUBLISHED = [
    ("VRNN, ELBO-trained (LSTM 32, z 32)", -8.69),
    ("VRNN, IWAE-trained", -8.01),
    ("VRNN, FIVO-trained (5 particles)", -7.51),
    ("Deep Markov Model (Krishnan et al.)", -6.93),
]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=JSB)
    parser.add_argument("--config", type=Path, default=RECIPE)
    parser.add_argument("--out", type=Path, default=Path("runs/jsb-bench"), help="the run folder (must not hold a run)")
    parser.add_argument("--iwae-samples", type=int, default=100, help="K of the IWAE and FIVO bounds evaluated")
    parser.add_argument("--json", type=Path, help="save the figures here")
    parser.add_argument("--steps", type=int, help="override the recipe's steps (quick checks)")
    parser.add_argument("--objective", default="elbo", help="train on elbo, iwae or fivo")
    parser.add_argument("--particles", type=int, default=1, help="particles of --objective iwae/fivo")
    parser.add_argument("--gradient", default="reparam", help="reparam, or dreg (iwae's doubly reparameterised gradient)")
    parser.add_argument("--table", type=Path, nargs="+", help="print the objectives x bounds table of these --json files")
    args = parser.parse_args()
    if args.table:
        _print_table([json.loads(path.read_text()) for path in args.table])
        return
    if not args.data.is_file():
        raise SystemExit(f"{args.data} is missing: the JSB Chorales file (see ../shared/data/README.md)")
    options = {"steps": args.steps} if args.steps else {}
    if args.objective != "elbo":
        options.update(objective=args.objective, particles=args.particles, gradient=args.gradient)
    start = time.perf_counter()
    result = api.train(str(args.data), out=args.out, config=args.config, **options)
    train_s = time.perf_counter() - start
    best = args.out / "best.safetensors"
    model, _ = api.load_model(best if best.exists() else args.out)
    figures: dict[str, dict[str, float]] = {}
    eval_start = time.perf_counter()
    for split in ("valid", "test"):
        report = api.evaluate(model, str(args.data), split=split, particles=args.iwae_samples, bounds="elbo,iwae,fivo", seed=0)
        likelihood = report["likelihood"]
        figures[split] = {"elbo_per_step": likelihood["elbo_per_step"], "iwae_per_step": likelihood["iwae"]["bound_per_step"],
                          "fivo_per_step": likelihood["fivo"]["bound_per_step"],
                          "elbo_per_sequence": likelihood["elbo"], "bits_per_dim": likelihood["bits_per_dim"]}
    summary = {
        "recipe": str(args.config.relative_to(ROOT) if args.config.is_relative_to(ROOT) else args.config),
        "parameters": model.num_parameters(), "steps": result.step, "threads": torch.get_num_threads(),
        "train_wall_s": round(train_s, 1), "eval_wall_s": round(time.perf_counter() - eval_start, 1),
        "best_step": _best_step(args.out), "iwae_samples": args.iwae_samples, **figures,
        "objective": args.objective, "particles": args.particles, "gradient": args.gradient,
    }
    _print(summary)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(summary, indent=1))


def _best_step(run_dir: Path) -> int | None:
    """The step of the best validation loss, from metrics.jsonl."""
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines() if line.strip()]
    scored = [r for r in records if "val_loss" in r]
    return min(scored, key=lambda r: r["val_loss"])["step"] if scored else None


def _print(summary: dict) -> None:
    test, valid, k = summary["test"], summary["valid"], summary["iwae_samples"]
    print(f"JSB Chorales, {summary['recipe']}: {summary['parameters']:,} parameters, {summary['steps']} steps "
          f"(best on valid at step {summary['best_step']}), {summary['threads']} thread(s)")
    print(f"training {summary['train_wall_s'] / 60:.1f} min, evaluation {summary['eval_wall_s'] / 60:.1f} min")
    trained = _trained_on(summary)
    print(f"trained on: {trained}")
    print(f"{'model':<42}{'test ELBO':>12}{f'test IWAE-{k}':>15}{f'test FIVO-{k}':>15}")
    print(f"{'vrnnkit (this run)':<42}{test['elbo_per_step']:>12.3f}{test['iwae_per_step']:>15.3f}{test['fivo_per_step']:>15.3f}")
    for name, figure in PUBLISHED:
        print(f"{name:<42}{figure:>12.2f}{'':>15}")
    print(f"valid: ELBO {valid['elbo_per_step']:.3f}, IWAE-{k} {valid['iwae_per_step']:.3f}, "
          f"FIVO-{k} {valid['fivo_per_step']:.3f} nats per time step")
    print("published figures are lower bounds on the test log-likelihood in nats per time step (higher is better)")


def _trained_on(summary: dict) -> str:
    """``elbo``, ``iwae K=4``, ``iwae K=4 dreg``: the objective, its particles and its gradient."""
    objective = summary.get("objective", "elbo")
    if objective == "elbo":
        return objective
    return f"{objective} K={summary['particles']}" + (" dreg" if summary.get("gradient", "reparam") == "dreg" else "")


def _print_table(summaries: list[dict]) -> None:
    """Rows: the objective trained on; columns: the bound evaluated with (test, nats per step)."""
    k = summaries[0]["iwae_samples"]
    elbo_wall = next((s["train_wall_s"] for s in summaries if s.get("objective", "elbo") == "elbo"), None)
    print(f"JSB Chorales test, nats per time step (higher is better); bounds with K={k}")
    print(f"{'trained on':<18}{'ELBO':>9}{f'IWAE-{k}':>10}{f'FIVO-{k}':>10}{'steps':>7}{'train min':>11}{'x ELBO':>8}")
    for s in summaries:
        name = _trained_on(s)
        ratio = f"{s['train_wall_s'] / elbo_wall:.2f}" if elbo_wall else "-"
        test = s["test"]
        print(f"{name:<18}{test['elbo_per_step']:>9.3f}{test['iwae_per_step']:>10.3f}{test.get('fivo_per_step', float('nan')):>10.3f}"
              f"{s['steps']:>7}{s['train_wall_s'] / 60:>11.1f}{ratio:>8}")


if __name__ == "__main__":
    main()
