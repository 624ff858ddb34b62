"""Models that leave vrnnkit: ONNX step functions, inference-only safetensors, torch.export.

ONNX export writes two graphs, each with a dynamic batch and the noise as an input, so both are
deterministic:

    OUT.onnx         the generative step  (state, noise) -> (params, frame, next_state)
    OUT.filter.onnx  the filtering step   (frame, state, noise) -> (next_state, z)

A model with inputs (``action_dim`` > 0, ``vrnnkit.model.actions``) takes one more input in
both graphs, ``action`` (B, action_dim): u_t, the input before the frame of the step (the one
filtered, or the one generated: the plan a future is imagined under).

(A model whose posterior reads later frames, ``posterior = "smoothing"``, has no filtering
step: its ONNX export is refused; ``pt2`` and ``safetensors`` work.)

``state`` is the model's carried state (B, ``state_size(model)``): the recurrent state, then the
last frame (``frame_difference`` models) and the skip reference (skip decoders), flattened;
zeros at the start of a sequence. ``noise`` is standard
normal (B, z_dim); ``frame`` is the likelihood's mean, fed back by the next generative step;
``params`` are the likelihood's parameters (B, P, *frame). A rollout therefore needs only a
loop, numpy and onnxruntime (``examples/onnx_inference.py``). After writing, the export runs a
T-step rollout of both graphs in onnxruntime beside PyTorch with the same noise, step by step
from the same states, and refuses files whose outputs differ by more than the tolerance; it
also reports how far a free onnxruntime rollout drifts.
"""

from __future__ import annotations

import contextlib
import io
import logging
import math
import os
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from vrnnkit.errors import ConfigError, RunError, output_problem
from vrnnkit.io.atomic import atomic_path, reported_as, write_bytes
from vrnnkit.model import VRNN

FORMATS = ("onnx", "safetensors", "pt2")
INSTALL_HINT = "pip install 'vrnnkit[export]'  (onnx, onnxscript and onnxruntime)"


class ExportError(RunError):
    """An export failed, or its parity check did."""


def state_size(model: VRNN) -> int:
    """Width of the exported graphs' ``state``: the recurrent state, then, for a
    ``frame_difference`` model, the last frame (flattened), then, for a skip decoder, the
    flattened skip reference (the frame and its feature maps, see ``vrnnkit.model.skips``). A state
    of zeros is the start of a sequence."""
    return model.rnn.state_size + sum(math.prod(shape) for shape in _carried_shapes(model))


def _carried_shapes(model: VRNN) -> list[tuple[int, ...]]:
    """The shapes the state carries after the recurrent state: the last frame, the reference."""
    last = [model.config.frame_shape] if model.reads_previous else []
    return last + model.reference_shapes()


def _unpack(model: VRNN, state: Tensor) -> tuple[Tensor, Tensor | None, list[Tensor] | None]:
    """(recurrent state, last frame or None, skip reference or None) from a packed state."""
    shapes = _carried_shapes(model)
    rnn_state, *flat = state.split([model.rnn.state_size] + [math.prod(s) for s in shapes], dim=1)
    carried = [f.reshape(-1, *s) for f, s in zip(flat, shapes, strict=True)]
    last = carried.pop(0) if model.reads_previous else None
    return rnn_state, last, (carried if model.uses_skips else None)


def _pack(rnn_state: Tensor, last: Tensor | None, reference: list[Tensor] | None) -> Tensor:
    carried = ([] if last is None else [last]) + (reference or [])
    return torch.cat([rnn_state, *(c.flatten(1) for c in carried)], dim=1) if carried else rnn_state


class GenerativeStep(nn.Module):
    """One step of generation: a latent from the prior, a frame, the next state.

    For a skip decoder the next state carries the generated frame's reference when
    ``skip_context`` is 0, and the incoming reference (the last filtered frame's) otherwise:
    the rules of ``VRNN.predict``."""

    def __init__(self, model: VRNN) -> None:
        super().__init__()
        self.model = model

    def forward(self, state: Tensor, noise: Tensor, action: Tensor | None = None) -> tuple[Tensor, Tensor, Tensor]:
        rnn_state, last, reference = _unpack(self.model, state)
        params, frame, next_state, new_reference = self.model.generate_step(rnn_state, noise, reference, previous=last, action=action)
        if self.model.uses_skips and self.model.config.skip_context == 0:
            reference = new_reference
        return params, frame, _pack(next_state, frame if last is not None else None, reference)


class FilterStep(nn.Module):
    """One step of filtering a real frame: a latent from the posterior, the next state (for a
    skip decoder, with this frame as the reference)."""

    def __init__(self, model: VRNN) -> None:
        super().__init__()
        self.model = model

    def forward(self, frame: Tensor, state: Tensor, noise: Tensor, action: Tensor | None = None) -> tuple[Tensor, Tensor]:
        rnn_state, last, _ = _unpack(self.model, state)
        next_state, z, reference = self.model.filter_step(frame, rnn_state, noise, previous=last, with_reference=True, action=action)
        return _pack(next_state, frame if last is not None else None, reference), z


def filter_path(out: Path) -> Path:
    """Where the filtering graph of an ONNX export to ``out`` goes."""
    return out.with_name(out.stem + ".filter.onnx")


def export(model: VRNN, out: str | os.PathLike[str], fmt: str = "onnx", *, steps: int = 10, tolerance: float = 1e-4, seed: int = 0) -> dict[str, Any]:
    """Export ``model`` to ``out`` in format ``fmt``; returns what was written and checked.

    A model on a GPU is exported from a CPU copy of itself: the files are the ones its CPU
    twin would give, and the model stays on its device."""
    out = Path(out)
    if fmt not in FORMATS:
        raise ConfigError(f"unknown export format {fmt!r}; choose one of {', '.join(FORMATS)}")
    if fmt == "onnx" and getattr(model.posterior, "reads_future", False):
        raise ConfigError(
            f"ONNX export writes a one-step filtering graph ({filter_path(out).name}), and this model's posterior "
            f"({model.config.posterior}) reads the frames after each step, so it has none; export --format pt2 "
            "(the generative step) or safetensors, or train with the filtering posterior (posterior = \"mlp\")"
        )
    for path in (out, filter_path(out)) if fmt == "onnx" else (out,):
        problem = output_problem(path)
        if problem:
            raise ConfigError(f"cannot write {path}: {problem}")
    model = _on_cpu(model.eval())
    if fmt == "safetensors":
        from vrnnkit.io.checkpoint import save

        save(model, out, metadata={"inference_only": "true"})
        return {"format": fmt, "files": [str(out)]}
    if fmt == "pt2":
        example = _example_inputs(model, GenerativeStep)
        batch = torch.export.Dim("batch", min=1)
        with _quiet_exporter():
            program = torch.export.export(GenerativeStep(model), example, dynamic_shapes=tuple({0: batch} for _ in example))
        # Serialized in memory, then written: torch's own file writer aborts the process
        # when the disk fills up.
        buffer = io.BytesIO()
        with _quiet_exporter():
            torch.export.save(program, buffer)
        write_bytes(out, buffer.getvalue())
        inputs = "state, noise, action" if model.config.action_dim else "state, noise"
        return {"format": fmt, "files": [str(out)], "graph": f"generative step ({inputs}) -> (params, frame, next_state)"}
    return _export_onnx(model, out, steps, tolerance, seed)


def _on_cpu(model: VRNN) -> VRNN:
    """``model`` itself when it is on the CPU, else a CPU copy of it (same config, same
    weights): files are written from the CPU whatever device the model is on, so the graphs
    and the parity check are the same, and the caller's model stays where it is."""
    tensors = model.state_dict()
    if all(tensor.device.type == "cpu" for tensor in tensors.values()):
        return model
    copy = VRNN(model.config)
    copy.load_state_dict({name: tensor.detach().cpu() for name, tensor in tensors.items()})
    return copy.eval()


@contextlib.contextmanager
def _quiet_exporter() -> Iterator[None]:
    """The exporter's progress lines and internal warnings are not the user's business."""
    previous = logging.root.manager.disable
    logging.disable(logging.WARNING)
    try:
        with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
            warnings.simplefilter("ignore")
            yield
    finally:
        logging.disable(previous)


def _example_inputs(model: VRNN, step: type[nn.Module], batch: int = 2) -> tuple[Tensor, ...]:
    state = torch.zeros(batch, state_size(model))
    noise = torch.zeros(batch, model.config.z_dim)
    action = (torch.zeros(batch, model.config.action_dim),) if model.config.action_dim else ()
    if step is GenerativeStep:
        return state, noise, *action
    return torch.zeros(batch, *model.config.frame_shape), state, noise, *action


def _export_onnx(model: VRNN, out: Path, steps: int, tolerance: float, seed: int) -> dict[str, Any]:
    try:
        import onnxruntime  # noqa: F401
        import onnxscript  # noqa: F401
    except ImportError:
        raise ConfigError(f"ONNX export needs the export extra: {INSTALL_HINT}") from None
    action = ["action"] if model.config.action_dim else []
    graphs = {
        out: (GenerativeStep(model).eval(), ["state", "noise", *action], ["params", "frame", "next_state"]),
        filter_path(out): (FilterStep(model).eval(), ["frame", "state", "noise", *action], ["next_state", "z"]),
    }
    with atomic_path(out) as generative_tmp, atomic_path(filter_path(out)) as filter_tmp, _quiet_exporter():
        temporary = {out: generative_tmp, filter_path(out): filter_tmp}
        for path, (module, inputs, outputs) in graphs.items():
            example = _example_inputs(model, type(module))
            batch = torch.export.Dim("batch", min=1)
            try:
                program = torch.onnx.export(
                    module, example, dynamo=True, input_names=inputs, output_names=outputs,
                    dynamic_shapes=tuple({0: batch} for _ in example), verbose=False,
                )
                program.optimize()
            except Exception as error:  # the exporter's own failure, reported with its reason
                raise ExportError(f"torch.onnx.export failed for {path.name}: {type(error).__name__}: {error}") from None
            with reported_as(path, temporary[path]):  # a full disk names the file it stopped
                program.save(str(temporary[path]))
        difference, drift = _parity(model, generative_tmp, filter_tmp, steps, seed)
        if difference > tolerance:
            raise ExportError(
                f"the ONNX graphs differ from PyTorch by {difference:.3g} (tolerance {tolerance:g}); nothing was written"
            )
    return {"format": "onnx", "files": [str(out), str(filter_path(out))], "parity_steps": steps,
            "max_abs_difference": difference, "free_rollout_drift": drift, "tolerance": tolerance}


@torch.no_grad()
def _parity(model: VRNN, generative: Path, filtering: Path, steps: int, seed: int, batch: int = 3) -> tuple[float, float]:
    """(checked, drift): the largest absolute difference between onnxruntime and PyTorch in
    states, latents and frames over a rollout of ``steps`` filtering steps on random frames and
    then ``steps`` generative steps with the same noise.

    ``checked`` gives both graphs the same inputs at every step of PyTorch's rollout, so it
    measures the graphs themselves. ``drift`` lets onnxruntime roll out on its own states:
    float32 rounding differences then grow along the feedback loop (about 1e-4 after 10
    generated frames for a trained 32x32 model), which says nothing about the export.
    """
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 3
    filter_session, generative_session = (
        ort.InferenceSession(str(p), options, providers=["CPUExecutionProvider"]) for p in (filtering, generative)
    )
    rng = np.random.default_rng(seed)
    filter_step, generative_step = FilterStep(model), GenerativeStep(model)
    reference = torch.zeros(batch, state_size(model))
    free = reference.numpy().copy()
    checked = drift = 0.0
    for phase in ("filter", "generate"):
        for _ in range(steps):
            noise = rng.standard_normal((batch, model.config.z_dim), dtype=np.float32)
            action = rng.standard_normal((batch, model.config.action_dim), dtype=np.float32) if model.config.action_dim else None
            fed = {} if action is None else {"action": action}
            inputs = () if action is None else (torch.from_numpy(action),)
            if phase == "filter":
                frame = rng.random((batch, *model.config.frame_shape), dtype=np.float32)
                expected = filter_step(torch.from_numpy(frame), reference, torch.from_numpy(noise), *inputs)
                got = filter_session.run(None, {"frame": frame, "state": reference.numpy(), "noise": noise, **fed})
                free = filter_session.run(None, {"frame": frame, "state": free, "noise": noise, **fed})[0]
                pairs = zip(got, expected, strict=True)
                reference = expected[0]
            else:
                expected = generative_step(reference, torch.from_numpy(noise), *inputs)
                got = generative_session.run(None, {"state": reference.numpy(), "noise": noise, **fed})
                free = generative_session.run(None, {"state": free, "noise": noise, **fed})[2]
                # Frames and states, not raw parameters: logits of tens differ by float32 rounding.
                pairs = zip(got[1:], expected[1:], strict=True)
                reference = expected[2]
            checked = max(checked, *(_diff(a, b) for a, b in pairs))
            drift = max(drift, _diff(free, reference))
    return checked, drift


def _diff(a: np.ndarray, b: Tensor) -> float:
    return float(np.abs(a - b.numpy()).max())
