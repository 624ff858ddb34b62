"""The values of actions: checked, and brought to float32 ``(N, T, A)``, discrete ones one-hot.

Shared by the data reader (:mod:`vrnnkit.data.actions`) and the reader of action plans, so that
a plan and the data a model learnt from follow one set of rules:

* continuous actions are floats, ``(N, T, A)`` or ``(N, T)`` (one action value a step, A = 1);
* discrete actions are integer class ids ``(N, T)``, one-hot encoded into ``A = classes``
  columns when the number of classes is given; the id ``-1`` (:data:`NO_ACTION`) stands for
  "no action" and becomes a row of zeros (the step before an episode's first frame);
* NaN and infinity are refused, and so are class ids out of range, naming the first one found.
"""

from __future__ import annotations

import numpy as np

from vrnnkit.data.checks import check_finite, check_numeric_dtype
from vrnnkit.errors import DataError

NO_ACTION = -1
"""The class id of "no action": its one-hot row is all zeros."""


def classes_hint(ids: np.ndarray) -> str:
    """What to pass for integer actions that came without a number of classes."""
    top = int(ids.max()) if ids.size else 0
    return (f"pass --action-classes K (action_classes=K in Python; K > {top}, the largest id found) to one-hot "
            "encode them, or store continuous actions as floats")


def one_hot(ids: np.ndarray, classes: int, source: str, *, first_axes: tuple[str, ...] = ("sequence", "step")) -> np.ndarray:
    """Integer class ids of any shape as float32 one-hot rows ``(*ids.shape, classes)``;
    ``NO_ACTION`` (-1) as a row of zeros. ``first_axes`` name the axes of ``ids`` in the
    message that points at an id out of range ("sequence 3, step 7")."""
    ids = np.asarray(ids)
    bad = (ids < NO_ACTION) | (ids >= classes)
    if bad.any():
        where = tuple(int(i) for i in np.argwhere(bad)[0])
        place = ", ".join(f"{name} {index}" for name, index in zip(first_axes[-len(where):], where, strict=True))
        raise DataError(
            f"{source}: action class {int(ids[where])} at {place} is out of range; expected class ids "
            f"0 to {classes - 1} for {classes} action classes (or {NO_ACTION} for no action), found "
            f"{int(bad.sum())} id(s) out of range, from {int(ids.min())} to {int(ids.max())}"
        )
    out = np.zeros((*ids.shape, classes), np.float32)
    taken = ids >= 0
    out[taken, ids[taken].astype(np.intp)] = 1.0
    return out


def check_classes(classes: int | None, source: str) -> int | None:
    """``classes`` after checking it is None or a whole number of at least 2."""
    if classes is None:
        return None
    if isinstance(classes, bool) or not isinstance(classes, (int, np.integer)) or classes < 2:
        raise DataError(f"{source}: expected a number of action classes of at least 2, found {classes!r}")
    return int(classes)


def encode_actions(
    actions: np.ndarray, steps: tuple[int, int], classes: int | None, source: str, *, has_sequences: bool = True,
) -> np.ndarray:
    """Actions for ``steps = (N, T)`` frames as float32 ``(N, T, A)``.

    ``has_sequences`` False: the frames are one sequence without an N axis, and the actions are
    ``(T,)`` or ``(T, A)``. Integer actions need ``classes`` (one-hot encoded); float actions
    with ``classes`` are either whole-number ids ``(N, T)`` or already one-hot ``(N, T, classes)``.
    """
    actions = np.asarray(actions)
    check_numeric_dtype(actions.dtype, f"{source} (actions)")
    count, length = steps
    expected = f"({count}, {length}) or ({count}, {length}, A)" if has_sequences else f"({length},) or ({length}, A)"
    if not has_sequences:
        actions = actions[None]
    if actions.ndim not in (2, 3) or actions.shape[:2] != (count, length):
        found = actions.shape if has_sequences else actions.shape[1:]
        raise DataError(
            f"{source}: the actions do not match the frames: {count} sequence(s) of {length} steps need actions of "
            f"shape {expected}, one row per frame, found actions of shape {found}"
        )
    if actions.ndim == 3 and actions.shape[2] == 0:
        raise DataError(f"{source}: expected at least one action value a step, found actions of shape {actions.shape}")
    if actions.dtype.kind == "b":
        actions = actions.astype(np.float32)
    if actions.dtype.kind in "iu":
        return _encode_ids(actions, classes, source, expected)
    bad = ~np.isfinite(actions)
    if bad.any():
        first = ", ".join(f"{name} {int(i)}" for name, i in zip(("sequence", "step"), np.argwhere(bad)[0], strict=False))
        raise DataError(f"{source}: expected finite actions, found {int(np.isnan(actions).sum())} NaN and "
                        f"{int(np.isinf(actions).sum())} infinite value(s), the first at {first}")
    check_finite(actions, f"{source} (actions)")  # float64 beyond float32's range
    if classes is None:
        return (actions[..., None] if actions.ndim == 2 else actions).astype(np.float32)
    if actions.ndim == 2:
        if not np.array_equal(actions, np.round(actions)):
            raise DataError(f"{source}: with {classes} action classes, expected whole-number class ids, "
                            f"found fractional values such as {actions[actions != np.round(actions)][0]:g}")
        return one_hot(actions.astype(np.int64), classes, source)
    if actions.shape[2] != classes:
        raise DataError(f"{source}: with {classes} action classes, expected class ids {expected[: expected.index(' or')]} "
                        f"or one-hot rows of {classes} columns, found float actions of shape {actions.shape}")
    return actions.astype(np.float32)


def _encode_ids(actions: np.ndarray, classes: int | None, source: str, expected: str) -> np.ndarray:
    if actions.ndim == 3:
        if actions.shape[2] != 1:
            raise DataError(f"{source}: integer actions are class ids, one a step: expected shape "
                            f"{expected[: expected.index(' or')]}, found {actions.shape}")
        actions = actions[..., 0]
    if classes is None:
        raise DataError(f"{source}: the actions are integers (class ids of discrete actions, dtype {actions.dtype}) "
                        f"and no number of classes was given; {classes_hint(actions)}")
    return one_hot(actions, classes, source)


def encode_plan(plan: np.ndarray, action_dim: int, classes: int | None, source: str) -> np.ndarray:
    """An action plan as float32 ``(T, A)`` or ``(K, T, A)`` (K plans), ``A = action_dim``.

    Integer plans are class ids ``(T,)`` or ``(K, T)``, one-hot encoded (``classes`` needed,
    equal to ``action_dim``); float plans are ``(T, A)`` or ``(K, T, A)``, or ``(T,)`` for
    one action value a step."""
    plan = np.asarray(plan)
    check_numeric_dtype(plan.dtype, f"{source} (action plan)")
    if classes is not None and classes != action_dim:
        raise DataError(f"{source}: {classes} action classes one-hot encode to {classes} columns, "
                        f"but the model takes {action_dim} action value(s) a step")
    if plan.size == 0:
        raise DataError(f"{source}: expected an action plan with at least one step, found shape {plan.shape}")
    if plan.dtype.kind == "b":
        plan = plan.astype(np.float32)
    discrete = plan.dtype.kind in "iu" or (classes is not None and plan.ndim in (1, 2) and plan.shape[-1] != classes)
    if discrete:
        if classes is None:
            raise DataError(f"{source}: the action plan holds integers (class ids, dtype {plan.dtype}) and no number "
                            f"of classes was given; {classes_hint(plan)}")
        if plan.ndim not in (1, 2):
            raise DataError(f"{source}: expected class ids (T,) or (K, T) for K plans, found shape {plan.shape}")
        check_finite(plan, f"{source} (action plan)")
        if not np.array_equal(plan, np.round(plan)):
            raise DataError(f"{source}: expected whole-number class ids, found fractional values")
        axes = ("step",) if plan.ndim == 1 else ("plan", "step")
        return one_hot(plan.astype(np.int64), classes, source, first_axes=axes)
    check_finite(plan, f"{source} (action plan)")
    if plan.ndim == 1 and action_dim == 1:
        plan = plan[:, None]
    if plan.ndim not in (2, 3) or plan.shape[-1] != action_dim:
        raise DataError(
            f"{source}: expected an action plan of shape (T, {action_dim}) or (K, T, {action_dim}) for a model that "
            f"takes {action_dim} action value(s) a step, found shape {plan.shape}"
        )
    return plan.astype(np.float32)
