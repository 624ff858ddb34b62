"""Peak memory and seconds of each hostile input of issue 19, each refused in a fresh process.

    OMP_NUM_THREADS=1 python benchmarks/bench_hostile_inputs.py [--json out.json]

Every case runs the `vrnnkit` command line in a child process under an address-space limit
(``RLIMIT_AS``, 6 GiB above what the interpreter maps at start-up), so a regression fails with
an allocation error instead of taking the machine's memory; the figure reported is the child's
peak resident memory (``VmHWM``; ``ru_maxrss`` would carry the parent's over the exec). The
target (issue 19): exit 1 or 2 within 30 s, one-line message, no traceback, peak under 1.5 GB,
whatever the input claims. Building the inputs needs
about 1.5 GB for a few seconds (the 12000x12000 GIF frames, in Pillow).
"""

from __future__ import annotations

import argparse
import io
import json
import os
import subprocess
import sys
import tempfile
import time
import zipfile
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from safetensors import safe_open
from safetensors.torch import save_file

import vrnnkit

LIMIT = 6 * 2**30
RUNNER = (
    "import atexit, resource, re, sys\n"
    "hwm = lambda: re.search(r'VmHWM:\\s+(\\d+)', open('/proc/self/status').read())[1]\n"
    "atexit.register(lambda: sys.stderr.write(f'\\nPEAK_KB={hwm()}\\n'))\n"
    "mapped = int(re.search(r'VmSize:\\s+(\\d+)', open('/proc/self/status').read())[1]) * 1024\n"
    f"resource.setrlimit(resource.RLIMIT_AS, (mapped + {LIMIT}, resource.RLIM_INFINITY))\n"
    "from vrnnkit.cli import app\n"
    "sys.argv = ['vrnnkit', *sys.argv[1:]]\n"
    "app()\n"
)


def make_inputs(folder: Path) -> dict[str, list[str]]:
    """The files of the issue, and the command line of each case."""
    torch.manual_seed(0)
    ckpt = vrnnkit.save(vrnnkit.VRNN(vrnnkit.VRNNConfig(frame_shape=(1, 32, 32), h_dim=64)), folder / "model.safetensors")
    with safe_open(str(ckpt), framework="pt") as handle:
        metadata, tensors = handle.metadata(), {k: handle.get_tensor(k) for k in handle.keys()}  # noqa: SIM118
    for h_dim in (30000, 200000):
        config = {**json.loads(metadata["config"]), "h_dim": h_dim, "feature_dim": h_dim, "latent_feature_dim": h_dim}
        save_file(tensors, str(folder / f"h{h_dim}.safetensors"), metadata={**metadata, "config": json.dumps(config)})
    frames = [Image.new("P", (12000, 12000), i) for i in range(3)]
    for frame in frames:
        frame.putpalette([0, 0, 0, 255, 255, 255, 128, 128, 128] + [0] * (253 * 3))
    frames[0].save(folder / "bomb.gif", save_all=True, append_images=frames[1:], duration=100, loop=0)
    del frames
    header = io.BytesIO()
    np.lib.format.write_array_header_1_0(header, {"descr": "<f8", "fortran_order": False, "shape": (1000,) * 4})
    (folder / "tb.npy").write_bytes(header.getvalue() + bytes(1000))
    with zipfile.ZipFile(folder / "tb.npz", "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("x.npy", header.getvalue() + bytes(1000))
    out = ["--out", str(folder / "out" / "x.gif")]
    return {
        "checkpoint header h_dim 30000": ["sample", "--ckpt", str(folder / "h30000.safetensors"), *out],
        "checkpoint header h_dim 200000": ["sample", "--ckpt", str(folder / "h200000.safetensors"), *out],
        "train --h-dim 10000000": ["train", "--h-dim", "10000000", "--steps", "1", "--out", str(folder / "out" / "run")],
        "train --num-sequences 1000000000": ["train", "--num-sequences", "1000000000", "--out", str(folder / "out" / "run")],
        "predict a GIF of 3 frames of 12000x12000": ["predict", str(folder / "bomb.gif"), "--ckpt", str(ckpt), *out],
        "predict --resize the same GIF": ["predict", str(folder / "bomb.gif"), "--ckpt", str(ckpt), "--resize", *out],
        "predict a .npy header claiming 8 TB": ["predict", str(folder / "tb.npy"), "--ckpt", str(ckpt), *out],
        "predict a .npz member claiming 8 TB": ["predict", str(folder / "tb.npz"), "--ckpt", str(ckpt), *out],
    }


def run_case(args: list[str], folder: Path) -> dict[str, object]:
    (folder / "out").mkdir(exist_ok=True)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "COLUMNS": "300"}
    env.pop("VRNNKIT_MEMORY", None)
    start = time.perf_counter()
    process = subprocess.Popen([sys.executable, "-c", RUNNER, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               text=True, env=env, cwd=folder)
    stdout, stderr = process.communicate(timeout=300)
    seconds = time.perf_counter() - start
    peak = [int(line[8:]) for line in stderr.splitlines() if line.startswith("PEAK_KB=")]
    lines = [line for line in (stdout + stderr).splitlines()
             if line.strip() and not line.startswith(("using ", "PEAK_KB="))]
    return {
        "exit": process.returncode, "seconds": round(seconds, 2), "peak_mib": round(peak[0] / 1024) if peak else None,
        "message": lines[-1] if lines else "", "traceback": "Traceback" in stderr,
        "wrote": sorted(p.name for p in (folder / "out").iterdir()),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", type=Path, help="Also write the figures here.")
    options = parser.parse_args()
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        cases = make_inputs(folder)
        for name, args in cases.items():
            result = run_case(args, folder)
            results[name] = result
            print(f"{name}: exit {result['exit']}, {result['seconds']} s, peak {result['peak_mib']} MiB, "
                  f"traceback {result['traceback']}, wrote {result['wrote']}\n    {result['message'][:240]}", flush=True)
    if options.json:
        options.json.write_text(json.dumps(results, indent=2), encoding="utf-8")


if __name__ == "__main__":
    main()
