"""A checkpoint's header checked against itself before any weight is read or any model built.

A safetensors header lists every tensor's name, dtype and shape, and safetensors checks that
each one's bytes lie within the file. The model config in the same header describes the
tensors a model has; here that model is built on PyTorch's ``meta`` device (shapes only, no
storage) and its tensors compared with the header's, so a config that claims a model far
larger than the file (``h_dim: 30000`` in a 1.4 MB file) is refused in milliseconds, naming
the first tensor that disagrees. A config so large that even its ``meta`` modules would take
long to build is refused first, from a floor on its parameter count. Loading then reads the
tensors and hands them to the ``meta`` model (``assign=True``): the memory a load takes is the
file's tensors plus a small constant.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from vrnnkit.errors import CheckpointError, ConfigError
from vrnnkit.model import VRNN
from vrnnkit.model.config import VRNNConfig
from vrnnkit.resources.sizing import describe, meta_model, parameter_floor

DTYPES = {
    "F64": torch.float64, "F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16,
    "I64": torch.int64, "I32": torch.int32, "I16": torch.int16, "I8": torch.int8, "U8": torch.uint8,
    "BOOL": torch.bool,
}
"""safetensors' dtype names and PyTorch's dtypes."""

Listed = dict[str, tuple[tuple[int, ...], str]]
"""The tensors a header lists: name -> (shape, safetensors dtype name)."""


def listed_tensors(handle: Any) -> Listed:
    """The name, shape and dtype of every tensor in an open safetensors file (no data read)."""
    listed: Listed = {}
    for name in handle.keys():  # noqa: SIM118 (a safe_open handle is no mapping)
        view = handle.get_slice(name)
        listed[name] = (tuple(int(size) for size in view.get_shape()), str(view.get_dtype()))
    return listed


def model_for_header(source: Path, config: VRNNConfig, listed: Listed) -> VRNN:
    """The ``meta`` model ``config`` describes, after checking that its tensors are the ones
    ``listed`` in the header; CheckpointError names the first that is not."""
    file_size = source.stat().st_size
    floor = parameter_floor(config)
    if floor > file_size or config.rnn_layers > len(listed):
        raise CheckpointError(
            f"{source}: the config in its header describes {describe(config)}, at least {floor:,} parameters "
            f"in {config.rnn_layers} recurrent layer(s); the file holds {file_size:,} bytes in {len(listed)} tensors, "
            "so the header does not describe these weights (a damaged or tampered file)"
        )
    try:
        model = meta_model(config)
    except ConfigError as error:
        raise CheckpointError(f"{source}: its model config cannot be rebuilt: {error}") from None
    compare(source, model.state_dict(), listed)
    return model


def compare(source: Path, expected: Mapping[str, torch.Tensor], listed: Listed) -> None:
    """Raise CheckpointError at the first tensor of ``expected`` (the model's, in its order)
    that ``listed`` lacks or lists with another shape or dtype, or at the first extra one."""
    for name, tensor in expected.items():
        if name not in listed:
            raise _mismatch(source, f"the model has a tensor {name!r} that the file lacks")
        shape, dtype = listed[name]
        if shape != tuple(tensor.shape):
            raise _mismatch(source, f"tensor {name!r} has shape {list(shape)} in the file; the config describes {list(tensor.shape)}")
        if DTYPES.get(dtype) != tensor.dtype:
            raise _mismatch(source, f"tensor {name!r} is {dtype} in the file; the model keeps it as {tensor.dtype}")
    extra = [name for name in listed if name not in expected]
    if extra:
        raise _mismatch(source, f"the file has a tensor {extra[0]!r} that the model lacks ({len(extra)} in all)")


def _mismatch(source: Path, detail: str) -> CheckpointError:
    return CheckpointError(f"{source}: the weights do not fit the model its config describes: {detail}")


def materialise(model: VRNN, tensors: dict[str, torch.Tensor], config: VRNNConfig) -> VRNN:
    """``model`` (on ``meta``) with the file's ``tensors`` as its own, with the strides the model
    gives them (they decide which kernels PyTorch picks, so a loaded model computes bit for bit
    what the saved one did): a view where only the strides of size-1 axes differ, a copy
    otherwise. A block that keeps a tensor outside its state dict gets a model built for real."""
    expected = model.state_dict()
    for name, tensor in tensors.items():
        like = expected[name]
        if tensor.stride() != like.stride():
            if tensor.is_contiguous() and like.is_contiguous():  # the same bytes in the same order
                tensors[name] = tensor.as_strided(like.shape, like.stride())
            else:
                tensors[name] = torch.empty_strided(like.shape, like.stride(), dtype=like.dtype).copy_(tensor)
    model.load_state_dict(tensors, strict=True, assign=True)
    if any(t.is_meta for t in (*model.parameters(), *model.buffers())):
        model = VRNN(config)
        model.load_state_dict(tensors, strict=True)
    return model
