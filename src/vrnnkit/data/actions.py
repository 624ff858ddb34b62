"""Sequences of frames with the action taken at each step: the data of a world model.

A file is a ``.npz`` archive holding

* ``frames``: the frames in any layout vrnnkit reads (:mod:`vrnnkit.data.layout`: ``NTHW``,
  ``NTHWC``, ``NTCHW``, ``TNHW``, ``THW``, ``NTD`` for vectors, ...), uint8 or float;
* ``actions``: ``(N, T, A)`` or ``(N, T)`` floats (continuous), or ``(N, T)`` integer class ids
  (discrete, one-hot encoded on load; ``-1`` means no action, a row of zeros); a file of one
  sequence without an N axis has ``(T, A)`` or ``(T,)``;
* optionally ``lengths`` ``(N,)``: the observed steps of each sequence (the rest is padding),
  ``action_classes`` (a whole number: the integer actions' number of classes, so that they load
  without ``--action-classes``), ``action_names`` (strings, one per action column) and
  ``rewards`` (``(N, T)``, recorded by ``vrnnkit data gym``; not read).

A folder of such files is read as one collection (files in natural order of their names, each
with one or more sequences, of any lengths: shorter ones are zero-padded to the longest and
``lengths`` says how many steps each has).

Alignment: ``actions[:, t]`` is u_t, the action taken *before* frame t is observed, the action
that led from frame t-1 to frame t. ``actions[:, 0]`` is whatever preceded the first frame
(zeros when nothing did). A model that predicts frame t from frames ``< t`` sees u_t with them.

Nothing is ever unpickled: every array is read with ``allow_pickle=False``.
"""

from __future__ import annotations

import os
import re
import warnings
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from vrnnkit.data.action_values import check_classes, encode_actions, encode_plan
from vrnnkit.data.checks import require_file, to_float32
from vrnnkit.data.files import _check_npy, _read_npz
from vrnnkit.data.layout import GUESS_ORDER, LayoutWarning, _fits, check_layout
from vrnnkit.data.sequences import SequenceArray
from vrnnkit.errors import DataError
from vrnnkit.io.atomic import atomic_path
from vrnnkit.resources.budget import require_memory

KEYS = ("frames", "actions", "lengths", "action_classes", "action_names", "rewards")
"""The arrays a file with actions may hold (``rewards``, ``(N, T)``, the reward received with
frame t, is kept for other tools and not read); others are refused, so a typo is not ignored."""


@dataclass(frozen=True, eq=False)  # arrays: no field-wise == or hash
class ActionSequences:
    """Frames and the actions taken along them (see the module's docstring for the alignment).

    Attributes:
        frames: ``(N, T, C, H, W)`` frames (channels first) or ``(N, T, D)`` vectors; uint8
            where the file holds uint8 (0..255: :meth:`float_frames` gives [0, 1]), else float32.
        actions: float32 ``(N, T, A)``; one-hot rows for discrete actions. ``actions[:, t]`` is
            the action taken before frame t (``actions[:, 0]``: zeros when nothing preceded it).
        lengths: int64 ``(N,)``, the observed steps of each sequence (frames and actions past
            them are zero padding), or None when every sequence has all T steps.
        action_names: a name per action column (e.g. ``("steer", "gas", "brake")``), or None.
    """

    frames: np.ndarray
    actions: np.ndarray
    lengths: np.ndarray | None
    action_names: tuple[str, ...] | None = None

    def __post_init__(self) -> None:
        frames, actions = self.frames, self.actions
        if frames.ndim not in (3, 5) or frames.dtype not in (np.uint8, np.float32):
            raise DataError(f"ActionSequences: expected uint8 or float32 frames (N, T, C, H, W) or (N, T, D), "
                            f"found {frames.dtype} of shape {frames.shape}")
        if actions.dtype != np.float32 or actions.ndim != 3 or actions.shape[:2] != frames.shape[:2]:
            raise DataError(f"ActionSequences: expected float32 actions (N, T, A) = {frames.shape[:2]} + (A,) for "
                            f"frames of shape {frames.shape}, found {actions.dtype} of shape {actions.shape}")
        if self.lengths is not None:
            object.__setattr__(self, "lengths", check_lengths(self.lengths, frames.shape[:2], "ActionSequences"))
        if self.action_names is not None:
            object.__setattr__(self, "action_names", tuple(str(name) for name in self.action_names))
            if len(self.action_names) != actions.shape[2]:
                raise DataError(f"ActionSequences: {len(self.action_names)} action names for {actions.shape[2]} "
                                "action columns; expected one name per column")

    @property
    def action_dim(self) -> int:
        """A: the action values a step (the number of classes for discrete actions)."""
        return int(self.actions.shape[2])

    @property
    def frame_shape(self) -> tuple[int, ...]:
        """The shape of one frame: ``(C, H, W)`` or ``(D,)``."""
        return tuple(self.frames.shape[2:])

    def float_frames(self) -> np.ndarray:
        """The frames as float32 (uint8 divided by 255, as every vrnnkit reader does)."""
        return to_float32(self.frames)

    def mask(self) -> np.ndarray:
        """``(N, T)`` bool: True at the observed steps (all of them when ``lengths`` is None)."""
        count, steps = self.frames.shape[:2]
        if self.lengths is None:
            return np.ones((count, steps), bool)
        return np.arange(steps)[None] < self.lengths[:, None]

    def sequence_array(self) -> SequenceArray:
        """The frames as a :class:`SequenceArray` (read per window as float32, as training reads files)."""
        return SequenceArray(self.frames, layout="NTCHW" if self.frames.ndim == 5 else "NTD", source="frames")


def has_actions(path: str | os.PathLike[str]) -> bool:
    """Whether ``path`` is data with actions: a ``.npz`` holding an ``actions`` array, or a
    folder whose ``.npz`` files (one at least) all do. Never raises (False for anything else)."""
    path = Path(path)
    try:
        if path.is_dir():
            files = _npz_files(path)
            return bool(files) and all(_lists_actions(file) for file in files)
        return path.suffix.lower() == ".npz" and _lists_actions(path)
    except OSError:
        return False


def load_action_data(
    path: str | os.PathLike[str], *, action_classes: int | None = None, layout: str | None = None,
) -> ActionSequences:
    """Read frames with their actions from a ``.npz`` file or a folder of them.

    Args:
        path: a ``.npz`` with ``frames`` and ``actions`` (see the module's docstring), or a folder of them.
        action_classes: the number of classes of integer (discrete) actions, one-hot encoded
            into that many columns; taken from the file's ``action_classes`` when not given.
        layout: the axes of ``frames`` (``"NTHW"``, ``"NTHWC"``, ...); guessed from the shape
            and the actions' shape when omitted.

    Raises:
        DataError: a missing or unreadable file, a missing ``frames`` or ``actions`` array,
            frames and actions of different N or T, wrong ranks, NaN or infinite actions,
            integer actions without a number of classes, a class id out of range, lengths out
            of range, arrays that would need unpickling.
    """
    path = Path(path)
    classes = check_classes(action_classes, str(path))
    if path.is_dir():
        files = _npz_files(path)
        if not files:
            raise DataError(f"{path}: expected .npz files with frames and actions in the folder, found none")
        return _concatenate([_read_file(file, classes, layout) for file in files], path)
    return _read_file(path, classes, layout)


def load_action_plan(
    path: str | os.PathLike[str], *, action_dim: int, action_classes: int | None = None, steps: int | None = None,
) -> np.ndarray:
    """Read an action plan (``predict --actions plan.npy``) as float32 ``(T, A)``, or
    ``(K, T, A)`` for K plans, with ``A = action_dim`` (the model's).

    Row t of a plan is the action taken before the t-th frame it is used for (the alignment of
    the data: see the module's docstring). A ``.npy`` holds the plan; a ``.npz`` holds it as
    ``actions`` (or as its only array). Float plans are ``(T, A)`` or ``(K, T, A)`` (``(T,)``
    when A = 1); integer plans are class ids ``(T,)`` or ``(K, T)``, one-hot encoded with
    ``action_classes`` (which must equal ``action_dim``). With ``steps``, the plan must have at
    least that many steps and is cut to them.

    Raises:
        DataError: a missing or unreadable file, a plan whose shape does not fit ``action_dim``,
            NaN or infinity, integer ids without ``action_classes`` or out of range, too few steps.
    """
    path = Path(path)
    require_file(path)
    classes = check_classes(action_classes, str(path))
    suffix = path.suffix.lower()
    if suffix == ".npy":
        _check_npy(path)
        plan = np.load(path, allow_pickle=False)
    elif suffix == ".npz":
        keys = _npz_keys(path)
        plan = _read_npz(path, "actions" if "actions" in keys else None)
    else:
        raise DataError(f"{path}: expected an action plan in a .npy or .npz file, found suffix {path.suffix!r}")
    plan = encode_plan(plan, action_dim, classes, str(path))
    if steps is not None:
        if plan.shape[-2] < steps:
            raise DataError(f"{path}: the action plan has {plan.shape[-2]} steps; {steps} steps were asked for, "
                            "one action for each; give a longer plan or fewer steps")
        plan = plan[..., :steps, :]
    return plan


def save_action_data(path: str | os.PathLike[str], data: ActionSequences, *, as_uint8: bool = False) -> None:
    """Write ``data`` to the ``.npz`` file ``path`` (compressed, atomically), as
    :func:`load_action_data` reads it: frames as they are, ``(N, T, C, H, W)`` or ``(N, T, D)``
    (channels first: a 4-D ``(N, T, H, W)`` would read as ``TNHW`` too where N equals T), the
    float32 actions, ``lengths`` and ``action_names`` where there are. ``as_uint8``: store float
    frames in [0, 1] as uint8 (x 255, rounded), four times smaller."""
    frames = data.frames
    if as_uint8 and frames.dtype != np.uint8:
        frames = np.clip(np.rint(frames * 255.0), 0, 255).astype(np.uint8)
    arrays = {"frames": frames, "actions": data.actions}
    if data.lengths is not None:
        arrays["lengths"] = data.lengths
    if data.action_names is not None:
        arrays["action_names"] = np.array(data.action_names, dtype=str)
    with atomic_path(path) as tmp, open(tmp, "wb") as file:
        np.savez_compressed(file, **arrays)


def check_lengths(lengths: np.ndarray, steps: tuple[int, int], source: str) -> np.ndarray:
    """``lengths`` as int64 ``(N,)`` after checking each is a whole number from 1 to T."""
    lengths = np.asarray(lengths)
    count, length = steps
    if lengths.shape != (count,) or lengths.dtype.kind not in "iu":
        raise DataError(f"{source}: expected 'lengths' as {count} integers, one per sequence, "
                        f"found {lengths.dtype} of shape {lengths.shape}")
    bad = np.flatnonzero((lengths < 1) | (lengths > length))
    if bad.size:
        raise DataError(f"{source}: expected lengths from 1 to the {length} steps of the frames, "
                        f"found {int(lengths[bad[0]])} for sequence {int(bad[0])}")
    return lengths.astype(np.int64)


def _read_file(path: Path, classes: int | None, layout: str | None) -> ActionSequences:
    require_file(path)
    if path.suffix.lower() != ".npz":
        raise DataError(f"{path}: expected a .npz file with 'frames' and 'actions' arrays, found suffix {path.suffix!r}")
    keys = _npz_keys(path)
    missing = [key for key in ("frames", "actions") if key not in keys]
    unknown = [key for key in keys if key not in KEYS]
    if missing or unknown:
        problem = f"no {' and no '.join(repr(k) for k in missing)}" if missing else f"unknown arrays {', '.join(map(repr, unknown))}"
        raise DataError(f"{path}: expected arrays 'frames' and 'actions' (and optionally {', '.join(map(repr, KEYS[2:]))}), "
                        f"found {problem} among {', '.join(map(repr, keys)) or 'no arrays'}")
    raw_frames, raw_actions = _read_npz(path, "frames"), _read_npz(path, "actions")
    classes = _file_classes(path, keys, classes)
    chosen = _frames_layout(raw_frames.shape, raw_actions.shape, str(path), layout)
    frames = SequenceArray(raw_frames, layout=chosen, source=f"{path} (frames)")  # checks dtype and values
    frames = _channels_first(raw_frames, frames.layout)
    actions = encode_actions(raw_actions, frames.shape[:2], classes, str(path), has_sequences="N" in chosen)
    lengths = check_lengths(_read_npz(path, "lengths"), frames.shape[:2], str(path)) if "lengths" in keys else None
    names = _names(path, keys, actions.shape[2])
    return ActionSequences(frames, actions, lengths, names)


def _file_classes(path: Path, keys: list[str], classes: int | None) -> int | None:
    """The number of classes: given, or the file's ``action_classes``; both must agree."""
    if "action_classes" not in keys:
        return classes
    stored = _read_npz(path, "action_classes")
    if stored.size != 1 or stored.dtype.kind not in "iu":
        raise DataError(f"{path}: expected 'action_classes' as one whole number, found {stored.dtype} of shape {stored.shape}")
    found = check_classes(int(stored.reshape(())), str(path))
    if classes is not None and classes != found:
        raise DataError(f"{path}: the file says its actions have {found} classes, and {classes} were asked for "
                        "(--action-classes); leave the option out or make them agree")
    return found


def _names(path: Path, keys: list[str], columns: int) -> tuple[str, ...] | None:
    if "action_names" not in keys:
        return None
    names = _read_npz(path, "action_names")
    if names.dtype.kind not in "US" or names.shape != (columns,):
        raise DataError(f"{path}: expected 'action_names' as {columns} strings, one per action column, "
                        f"found {names.dtype} of shape {names.shape}")
    return tuple(str(name) for name in names.astype(str))


def _frames_layout(shape: tuple[int, ...], actions: tuple[int, ...], source: str, layout: str | None) -> str:
    """The layout of ``frames``: ``layout`` if given, else the one layout of the guesses of
    :mod:`vrnnkit.data.layout` whose sequences and steps the actions have (a LayoutWarning
    where several have them)."""
    if layout is not None:
        return check_layout(layout, shape, f"{source} (frames)")
    fitting = []
    for candidate in GUESS_ORDER.get(len(shape), ()):
        try:
            check_layout(candidate, shape, source)
        except DataError:
            continue
        if _fits(candidate, shape):
            fitting.append(candidate)
    if not fitting:
        raise DataError(f"{source}: no known layout fits frames of shape {shape}; expected e.g. (N, T, H, W), "
                        "(N, T, H, W, C), (N, T, C, H, W) or (N, T, D) vectors")
    matching = [candidate for candidate in fitting if _steps(candidate, shape) == _action_steps(candidate, actions)]
    if not matching:
        count, length = _steps(fitting[0], shape)
        raise DataError(
            f"{source}: the frames and the actions do not match: frames of shape {shape} (read as {fitting[0]}: "
            f"{count} sequence(s) of {length} steps) need actions of shape ({count}, {length}) or ({count}, {length}, A), "
            f"one row per frame, found actions of shape {actions}"
        )
    if len(matching) > 1:
        warnings.warn(f"{source}: frames of shape {shape} could be {' or '.join(matching)}; read them as {matching[0]}. "
                      f"Pass layout= (--layout) to choose another reading.", LayoutWarning, stacklevel=4)
    return matching[0]


def _steps(layout: str, shape: tuple[int, ...]) -> tuple[int, int]:
    return (shape[layout.index("N")] if "N" in layout else 1, shape[layout.index("T")])


def _action_steps(layout: str, actions: tuple[int, ...]) -> tuple[int, int] | None:
    if "N" in layout:
        return actions[:2] if len(actions) in (2, 3) else None
    return (1, actions[0]) if len(actions) in (1, 2) else None


def _channels_first(frames: np.ndarray, layout: str) -> np.ndarray:
    """Raw frames of ``layout`` as ``(N, T, C, H, W)`` or ``(N, T, D)``: uint8 kept, other dtypes float32."""
    canonical = "NTCHW" if "H" in layout else "NTD"
    for axis in "NC":
        if axis in canonical and axis not in layout:
            frames, layout = frames[..., None], layout + axis
    frames = np.ascontiguousarray(frames.transpose([layout.index(axis) for axis in canonical]))
    return frames if frames.dtype == np.uint8 else frames.astype(np.float32)


def _concatenate(parts: list[ActionSequences], folder: Path) -> ActionSequences:
    """The sequences of every file of a folder, zero-padded to the longest."""
    first = parts[0]
    for part, file in zip(parts, _npz_files(folder), strict=True):
        if part.frame_shape != first.frame_shape or part.action_dim != first.action_dim:
            raise DataError(f"{file}: frames of shape {part.frame_shape} with {part.action_dim} action value(s) a step; "
                            f"the folder's first file has frames of shape {first.frame_shape} with {first.action_dim}; "
                            "expected one frame shape and one action size for every file")
        if part.action_names != first.action_names:
            raise DataError(f"{file}: action names {part.action_names} differ from the first file's {first.action_names}")
    steps = max(part.frames.shape[1] for part in parts)
    count = sum(len(part.frames) for part in parts)
    dtype = np.uint8 if all(part.frames.dtype == np.uint8 for part in parts) else np.float32
    require_memory(count * steps * (int(np.prod(first.frame_shape)) * np.dtype(dtype).itemsize + 4 * first.action_dim),
                   f"{folder}: {count:,} sequences padded to {steps:,} steps", DataError, purpose="in memory",
                   fix="record shorter episodes, or fewer of them, or smaller frames")
    frames = np.zeros((count, steps, *first.frame_shape), dtype)
    actions = np.zeros((count, steps, first.action_dim), np.float32)
    lengths = np.empty(count, np.int64)
    row = 0
    for part in parts:
        rows, length = part.frames.shape[:2]
        frames[row : row + rows, :length] = part.frames if dtype == np.uint8 else part.float_frames()
        actions[row : row + rows, :length] = part.actions
        lengths[row : row + rows] = length if part.lengths is None else part.lengths
        row += rows
    return ActionSequences(frames, actions, None if (lengths == steps).all() else lengths, first.action_names)


def _npz_files(folder: Path) -> list[Path]:
    files = [file for file in folder.iterdir() if file.suffix.lower() == ".npz" and file.is_file()]
    return sorted(files, key=lambda file: [int(p) if p.isdigit() else p for p in re.split(r"(\d+)", file.name)])


def _npz_keys(path: Path) -> list[str]:
    """The names of the arrays of a .npz archive, read from its index (no array is loaded)."""
    require_file(path)
    try:
        with zipfile.ZipFile(path) as archive:
            names = archive.namelist()
    except (zipfile.BadZipFile, OSError, NotImplementedError) as err:
        raise DataError(f"{path}: expected a NumPy .npz archive (a zip file), found an unreadable file ({err})") from err
    return [name[:-4] if name.endswith(".npy") else name for name in names]


def _lists_actions(path: Path) -> bool:
    try:
        return "actions" in _npz_keys(path)
    except DataError:
        return False
