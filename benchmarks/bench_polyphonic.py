"""Polyphonic music in nats per time step, JSB Chorales and Nottingham, beside the published
latent-variable and autoregressive figures.

For each set, trains through ``vrnnkit.api.train`` with one recipe (``examples/polyphonic.toml``,
the same file for both sets), exactly as

    vrnnkit train ../shared/data/jsb-chorales/jsb-chorales-quarter.json --config examples/polyphonic.toml --out runs/jsb
    vrnnkit eval ../shared/data/jsb-chorales/jsb-chorales-quarter.json --ckpt runs/jsb/best.safetensors --split test
    vrnnkit train ../shared/data/nottingham/nottingham.json --config examples/polyphonic.toml --out runs/nottingham
    vrnnkit eval ../shared/data/nottingham/nottingham.json --ckpt runs/nottingham/best.safetensors --split test

runs them (the ``train`` split trains, ``valid`` picks ``best.safetensors``), then scores the best
checkpoint on valid and test, whole pieces: the ELBO, the IWAE bound and the FIVO bound (K = 100
each), each the sum over the split's sequences divided by its number of real time steps. Prints
each set's table with the published rows, the model size, the wall times, the thread count and
the load average; ``--json`` saves everything.

    python benchmarks/bench_polyphonic.py --out runs/poly-bench --json runs/poly-bench.json
    python benchmarks/bench_polyphonic.py --set nottingham --out runs/nott --json runs/nott.json

``--objective iwae|fivo --particles K`` trains the same recipe on a tighter bound, ``--steps``
sets the steps (equal wall time: fewer steps for more particles); ``--table A.json B.json ...``
prints the objectives x bounds table of saved runs of one set:

    python benchmarks/bench_polyphonic.py --set jsb --out runs/jsb-elbo --json runs/jsb-elbo.json
    python benchmarks/bench_polyphonic.py --set jsb --objective iwae --particles 4 --out runs/jsb-iwae --json runs/jsb-iwae.json
    python benchmarks/bench_polyphonic.py --table runs/jsb-elbo.json runs/jsb-iwae.json

Published test figures (nats per time step, higher is better; from ``../shared/data/README.md``
and issue 29): ``PUBLISHED`` below. Measured figures of this script are in docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import torch

from vrnnkit import api

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data"
RECIPE = ROOT / "examples" / "polyphonic.toml"
SETS = {
    "jsb": ("JSB Chorales", DATA / "jsb-chorales" / "jsb-chorales-quarter.json"),
    "nottingham": ("Nottingham", DATA / "nottingham" / "nottingham.json"),
}
# (model, {set: (ELBO or exact, importance-sampled or None)}); None: not published for that set.
PUBLISHED = [
    ("DMM, NADE emission (Krishnan 2017), ELBO / IS", {"jsb": (-5.335, -5.118), "nottingham": (-2.347, -2.305)}),
    ("RNN-NADE (Boulanger-Lewandowski 2012), exact", {"jsb": (-5.19, None), "nottingham": (-2.31, None)}),
    ("SRNN (Fraccaro 2016), ELBO, as cited", {"jsb": (-4.74, None), "nottingham": (-2.94, None)}),
    ("TCN (Bai 2018), exact", {"nottingham": (-3.07, None)}),
    ("Deep Markov Model (Krishnan 2017), ELBO", {"jsb": (-6.93, None)}),
    ("VRNN re-run, ELBO-trained", {"jsb": (-8.69, None), "nottingham": (-3.87, None)}),
    ("VRNN re-run, IWAE-trained", {"jsb": (-8.01, None), "nottingham": (-3.12, None)}),
    ("VRNN re-run, FIVO-trained (5 particles)", {"jsb": (-7.51, None), "nottingham": (-3.07, None)}),
]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--set", choices=("jsb", "nottingham", "both"), default="both", help="which data set(s)")
    parser.add_argument("--data", type=Path, help="the note-list JSON (one --set only; default: ../shared/data)")
    parser.add_argument("--config", type=Path, default=RECIPE)
    parser.add_argument("--out", type=Path, default=Path("runs/poly-bench"),
                        help="the run folder (must not hold a run); with --set both, one sub-folder per set")
    parser.add_argument("--iwae-samples", type=int, default=100, help="K of the IWAE and FIVO bounds evaluated")
    parser.add_argument("--json", type=Path, help="save the figures here")
    parser.add_argument("--steps", type=int, help="override the recipe's steps")
    parser.add_argument("--objective", default="elbo", help="train on elbo, iwae or fivo")
    parser.add_argument("--particles", type=int, default=1, help="particles of --objective iwae/fivo")
    parser.add_argument("--gradient", default="reparam", help="reparam, or dreg (iwae's doubly reparameterised gradient)")
    parser.add_argument("--table", type=Path, nargs="+", help="print the objectives x bounds table of these --json files")
    args = parser.parse_args()
    if args.table:
        _print_table([_summaries(json.loads(path.read_text())) for path in args.table])
        return
    names = ["jsb", "nottingham"] if args.set == "both" else [args.set]
    if args.data is not None and len(names) > 1:
        raise SystemExit("--data names one file: give --set jsb or --set nottingham with it")
    summaries = {}
    for name in names:
        data = args.data or SETS[name][1]
        if not data.is_file():
            raise SystemExit(f"{data} is missing: the {SETS[name][0]} file (see ../shared/data/README.md)")
        out = args.out / name if len(names) > 1 else args.out
        summaries[name] = _run(name, data, out, args)
        _print(summaries[name])
        if args.json:
            args.json.parent.mkdir(parents=True, exist_ok=True)
            args.json.write_text(json.dumps(summaries[name] if len(names) == 1 else summaries, indent=1))


def _run(name: str, data: Path, out: Path, args: argparse.Namespace) -> dict:
    """Train ``data`` with the recipe into ``out``, then score its best checkpoint on valid and test."""
    options = {"steps": args.steps} if args.steps else {}
    if args.objective != "elbo":
        options.update(objective=args.objective, particles=args.particles, gradient=args.gradient)
    load_before = os.getloadavg()[0]
    start = time.perf_counter()
    result = api.train(str(data), out=out, config=args.config, **options)
    train_s = time.perf_counter() - start
    load_after = os.getloadavg()[0]
    best = out / "best.safetensors"
    model, _ = api.load_model(best if best.exists() else out)
    figures: dict[str, dict[str, float]] = {}
    eval_start = time.perf_counter()
    for split in ("valid", "test"):
        report = api.evaluate(model, str(data), split=split, particles=args.iwae_samples, bounds="elbo,iwae,fivo", seed=0)
        likelihood = report["likelihood"]
        figures[split] = {"elbo_per_step": likelihood["elbo_per_step"], "iwae_per_step": likelihood["iwae"]["bound_per_step"],
                          "fivo_per_step": likelihood["fivo"]["bound_per_step"],
                          "elbo_per_sequence": likelihood["elbo"], "bits_per_dim": likelihood["bits_per_dim"]}
    config = args.config
    return {
        "set": name, "recipe": str(config.relative_to(ROOT) if config.is_relative_to(ROOT) else config),
        "parameters": model.num_parameters(), "steps": result.step, "threads": torch.get_num_threads(),
        "load_average": [round(load_before, 2), round(load_after, 2)],
        "train_wall_s": round(train_s, 1), "eval_wall_s": round(time.perf_counter() - eval_start, 1),
        "best_step": _best_step(out), "iwae_samples": args.iwae_samples, **figures,
        "objective": args.objective, "particles": args.particles, "gradient": args.gradient,
    }


def _summaries(saved: dict) -> dict:
    """One run's summary from a --json file (a single set's summary, or the first of several)."""
    return saved if "test" in saved else next(iter(saved.values()))


def _best_step(run_dir: Path) -> int | None:
    """The step of the best validation loss, from metrics.jsonl."""
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines() if line.strip()]
    scored = [r for r in records if "val_loss" in r]
    return min(scored, key=lambda r: r["val_loss"])["step"] if scored else None


def _print(summary: dict) -> None:
    test, valid, k = summary["test"], summary["valid"], summary["iwae_samples"]
    name = summary.get("set", "jsb")
    print(f"\n{SETS[name][0]}, {summary['recipe']}: {summary['parameters']:,} parameters, {summary['steps']} steps "
          f"(best on valid at step {summary['best_step']}), {summary['threads']} thread(s), "
          f"load average {summary['load_average'][0]} before / {summary['load_average'][1]} after training")
    print(f"training {summary['train_wall_s'] / 60:.1f} min, evaluation {summary['eval_wall_s'] / 60:.1f} min; "
          f"trained on: {_trained_on(summary)}")
    print(f"{'test, nats per time step':<48}{'ELBO / exact':>13}{f'IWAE-{k} / IS':>15}{f'FIVO-{k}':>10}")
    print(f"{'vrnnkit (this run)':<48}{test['elbo_per_step']:>13.3f}{test['iwae_per_step']:>15.3f}{test['fivo_per_step']:>10.3f}")
    for model, figures in PUBLISHED:
        if name in figures:
            bound, sampled = figures[name]
            print(f"{model:<48}{bound:>13.3f}{'' if sampled is None else f'{sampled:.3f}':>15}")
    print(f"valid: ELBO {valid['elbo_per_step']:.3f}, IWAE-{k} {valid['iwae_per_step']:.3f}, "
          f"FIVO-{k} {valid['fivo_per_step']:.3f} nats per time step")
    print("published figures: lower bounds or exact test log-likelihoods in nats per time step (higher is better)")


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
    print(f"{SETS[summaries[0].get('set', 'jsb')][0]} test, nats per time step (higher is better); bounds with K={k}")
    print(f"{'trained on':<18}{'ELBO':>9}{f'IWAE-{k}':>10}{f'FIVO-{k}':>10}{'steps':>7}{'train min':>11}{'x ELBO':>8}")
    for s in summaries:
        name = _trained_on(s)
        ratio = f"{s['train_wall_s'] / elbo_wall:.2f}" if elbo_wall else "-"
        test = s["test"]
        print(f"{name:<18}{test['elbo_per_step']:>9.3f}{test['iwae_per_step']:>10.3f}{test.get('fivo_per_step', float('nan')):>10.3f}"
              f"{s['steps']:>7}{s['train_wall_s'] / 60:>11.1f}{ratio:>8}")


if __name__ == "__main__":
    main()
