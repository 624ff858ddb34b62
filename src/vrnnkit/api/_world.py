"""World models through the API and the command line: frames with their actions in, futures
imagined under chosen actions out (``vrnnkit predict --actions``, ``sample --actions``, and
``eval`` on data with actions, which also scores the model with the actions shuffled between
clips: how much it uses them).

Alignment (``vrnnkit.data.actions``): ``actions[:, t]`` is u_t, the action taken before frame t.
Predicting frames C .. C+H-1 after a context of C frames needs u_0 .. u_{C+H-1}: the context's
recorded actions, then a plan (one row per predicted frame) or the clip's own recorded ones.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from vrnnkit.data import check_unit_range
from vrnnkit.data.actions import has_actions, load_action_data, load_action_plan
from vrnnkit.errors import ConfigError, DataError
from vrnnkit.model import VRNN

NO_ACTIONS = ("this model was trained without actions (action_dim 0), so {what} cannot steer it; "
              "train on frames with actions (a .npz with 'frames' and 'actions') to get a world model")


def takes_actions(model: VRNN) -> bool:
    """Whether ``model`` reads an action per step (``action_dim`` > 0)."""
    return model.config.action_dim > 0


def is_action_data(path: Any) -> bool:
    """Whether ``path`` names frames with actions (a .npz with ``actions``, or a folder of them)."""
    return isinstance(path, (str, os.PathLike)) and has_actions(path)


def read_action_input(model: VRNN, path: str | os.PathLike[str], *, layout: str | None = None,
                      action_classes: int | None = None) -> tuple[Tensor, Tensor]:
    """The frames (N, T, *frame) and actions (N, T, A) of a file with actions, checked against
    the model. Sequences of different lengths are cut to the shortest (every clip then has the
    same steps). Integer actions are one-hot encoded with ``action_classes``, by default the
    model's ``action_dim``."""
    frames, actions, lengths = _read_checked(model, path, layout, action_classes)
    steps = int(lengths.min())
    return frames[:, :steps], actions[:, :steps]


def action_windows(model: VRNN, path: str | os.PathLike[str], length: int, *,
                   layout: str | None = None) -> tuple[Tensor, Tensor, list[str]]:
    """Every non-overlapping window of ``length`` steps of every sequence of a file with
    actions (each sequence to its own length; the steps left over at its end are not scored):
    the frames (W, length, *frame), their actions (W, length, A) and, per window, the name of
    the sequence it was cut from ("sequence 3"). A long recording (a gym episode) so gives
    many test windows, with context and future wherever the sequence goes."""
    frames, actions, lengths = _read_checked(model, path, layout, None)
    starts = [(n, start) for n, steps in enumerate(lengths.tolist()) for start in range(0, steps - length + 1, length)]
    if not starts:
        raise DataError(f"{path}: no sequence has a window of {length} steps (context + horizon); the longest "
                        f"has {int(lengths.max())}: lower --context or --horizon")
    rows, offsets = torch.tensor(starts).T
    steps = offsets[:, None] + torch.arange(length)
    return frames[rows[:, None], steps], actions[rows[:, None], steps], [f"sequence {n}" for n, _ in starts]


def _read_checked(model: VRNN, path: str | os.PathLike[str], layout: str | None,
                  action_classes: int | None) -> tuple[Tensor, Tensor, np.ndarray]:
    """The frames (N, T, *frame), actions (N, T, A) and observed lengths (N,) of a file with
    actions, checked against the model."""
    try:
        data = load_action_data(path, layout=layout, action_classes=action_classes)
    except DataError:
        if action_classes is not None or not takes_actions(model):
            raise
        # Integer class ids with no count of classes in the file: the model's width is that count.
        data = load_action_data(path, layout=layout, action_classes=model.config.action_dim)
    lengths = data.lengths if data.lengths is not None else np.full(len(data.frames), data.frames.shape[1])
    frames = torch.from_numpy(data.float_frames())
    actions = torch.from_numpy(np.ascontiguousarray(data.actions))
    wanted = tuple(model.config.frame_shape)
    if tuple(frames.shape[2:]) != wanted:
        raise DataError(f"{path} has frames of shape {tuple(frames.shape[2:])}; the model was trained on {wanted}")
    if takes_actions(model) and actions.shape[2] != model.config.action_dim:
        raise DataError(f"{path} has {actions.shape[2]} action values a step; the model was trained on "
                        f"{model.config.action_dim}")
    if model.config.likelihood_support == "unit-interval":
        check_unit_range(frames, str(path))
    return frames, actions, np.asarray(lengths)


def read_plans(model: VRNN, plan: str | os.PathLike[str] | np.ndarray | Tensor, *, steps: int | None = None,
               action_classes: int | None = None) -> Tensor:
    """Action plans (K, T, A) from a file (``load_action_plan``: ``(T, A)`` is one plan,
    ``(K, T, A)`` K of them) or an array, checked against the model (a model without actions
    refuses them: ConfigError); with ``steps``, cut to that many steps (fewer: DataError)."""
    if not takes_actions(model):
        raise ConfigError(NO_ACTIONS.format(what="--actions"))
    width = model.config.action_dim
    if isinstance(plan, (str, os.PathLike)):
        try:
            plans = torch.from_numpy(load_action_plan(plan, action_dim=width, action_classes=action_classes, steps=steps))
        except DataError as error:
            if action_classes is not None or "no number of classes" not in str(error):
                raise
            # Class ids: the model's action width is their number of classes.
            plans = torch.from_numpy(load_action_plan(plan, action_dim=width, action_classes=width, steps=steps))
    else:
        plans = torch.as_tensor(plan, dtype=torch.float32)
        if plans.dim() not in (2, 3) or plans.shape[-1] != width or (steps is not None and plans.shape[-2] < steps):
            raise DataError(f"an action plan must be (T, {width}) or (K, T, {width}) with T >= {steps or 1}, got {tuple(plans.shape)}")
        plans = plans[..., :steps, :] if steps is not None else plans
    return plans[None] if plans.dim() == 2 else plans


def recorded_future(actions: Tensor, context: int, horizon: int, source: str) -> Tensor:
    """The recorded actions u_0 .. u_{context+horizon-1} of each clip; DataError when the clip
    records fewer."""
    needed = context + horizon
    if actions.shape[1] < needed:
        raise DataError(f"{source} records actions for {actions.shape[1]} steps; predicting {horizon} frames after "
                        f"{context} context frames under the recorded actions needs {needed}; give a plan "
                        "(--actions plan.npy) or lower --horizon")
    return actions[:, :needed]


def under_plans(model: VRNN, videos: Tensor, actions: Tensor, plans: Tensor, *, context: int, samples: int, seed: int,
                mean: bool, feedback: str | None) -> Tensor:
    """Futures (B, K * samples, H, *frame) of each clip under each of K plans (K, H, A), plan
    by plan: the context is filtered under its recorded actions, the futures imagined under
    the plan. Every plan starts from the same seed, so the plans' futures differ by the plan."""
    futures = []
    for plan in plans:
        steered = torch.cat([actions[:, :context], plan.expand(len(videos), -1, -1).to(actions.dtype)], 1)
        generator = torch.Generator().manual_seed(seed)
        futures.append(model.predict(videos[:, :context], plan.shape[0], samples, generator=generator, mean=mean,
                                     feedback=feedback, actions=steered))
    return torch.cat(futures, 1)


def sample_plans(model: VRNN, actions: Any, num: int, steps: int | None, action_classes: int | None = None) -> tuple[Tensor | None, int, int]:
    """``vrnnkit sample``'s inputs: (actions (K * num, T, A) or None, clips, steps). A model with
    actions needs a plan (K plans give ``num`` clips each, plan by plan); one without refuses it."""
    if actions is None:
        if takes_actions(model):
            raise ConfigError(f"this model takes an action per step (action_dim {model.config.action_dim}); give the "
                              "actions to sample under: --actions plan.npy ((T, A), or (K, T, A) for K plans)")
        return None, num, steps or 20
    plans = read_plans(model, actions, steps=steps, action_classes=action_classes)
    return plans.repeat_interleave(num, 0), num * plans.shape[0], plans.shape[1]


def shuffled_between_clips(actions: Tensor, seed: int) -> Tensor | None:
    """The clips' actions given to other clips: a random permutation with no clip keeping its
    own (a derangement, by rotating a random order by one); None with fewer than two clips."""
    count = actions.shape[0]
    if count < 2:
        return None
    order = torch.randperm(count, generator=torch.Generator().manual_seed(seed + 7))
    target = torch.empty_like(order)
    target[order] = order.roll(1)
    return actions[target]


def evaluate_with_actions(model: VRNN, path: str | os.PathLike[str], evaluate: Any, *, layout: str | None = None,
                          windows: int | None = None, **options: Any) -> dict[str, Any]:
    """``evaluate`` (``vrnnkit.evaluation.evaluate``) on a file with actions: the figures under
    the recorded actions, and under ``shuffled_actions`` the same figures with the actions
    shuffled between clips (how much the model uses them). A model without actions is scored
    on the frames alone (``actions`` says so). ``windows``: score every non-overlapping window
    of that many steps of each sequence (:func:`action_windows`; figures per sequence too, and
    the shuffling then gives each window the actions of another window) instead of each
    sequence from its start."""
    if windows is None:
        frames, actions = read_action_input(model, path, layout=layout)
    else:
        frames, actions, groups = action_windows(model, path, windows, layout=layout)
        options = {**options, "groups": groups, "horizon": windows - options.get("context", 5)}
    if not takes_actions(model):
        report = evaluate(model, frames, **options)
        report["actions"] = "ignored: the model was trained without actions"
        return report
    report = evaluate(model, frames, actions=actions, **options)
    report["actions"] = "recorded"
    shuffled = shuffled_between_clips(actions, options.get("seed", 0))
    if shuffled is None:
        report["shuffled_actions"] = {"skipped": "one clip: nothing to shuffle its actions with"}
    else:
        other = evaluate(model, frames, actions=shuffled, **options)
        report["shuffled_actions"] = {"likelihood": other["likelihood"], "prediction": other["prediction"]}
    return report


def check_clip_actions(model: VRNN, path: Path, recorded: Tensor | None) -> None:
    """A model with actions needs the context's recorded actions: DataError for a clip without."""
    if takes_actions(model) and recorded is None:
        raise DataError(f"{path} holds frames without actions; this model takes an action per step (action_dim "
                        f"{model.config.action_dim}), the context's included: give a .npz with 'frames' and 'actions'")
