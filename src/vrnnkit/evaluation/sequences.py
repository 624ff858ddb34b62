"""Likelihood bounds of sequences of different lengths, per time step, per sequence and per dim.

    report = evaluate_variable_length(model, sequences, iwae_samples=100)
    report["likelihood"]["elbo_per_step"]      # nats per time step: the music benchmarks' figure

``sequences`` are ``(T_i, *frame)`` arrays (:func:`vrnnkit.data.load_variable_length`). Each
bound is summed over every sequence and divided by the total number of real steps ("nats per
time step", as the polyphonic-music papers report it); beside it the mean per sequence and the
per-dimension figure (``-sum / (steps x frame size)``, in nats and bits). Sequences are batched
by similar length with a mask, and the IWAE bound runs its samples in chunks, so memory stays
bounded by ``batch_size`` x the longest sequence x the chunk. The schema::

    {
      "vrnnkit_version": "0.2.0", "num_sequences": 77, "num_steps": 4725, "frame_shape": [88],
      "seed": 0,
      "likelihood": {
        "elbo_per_step": -6.9,      # sum of ELBOs / num_steps (nats; higher is better)
        "elbo": -423.1,             # mean ELBO per sequence (nats)
        "nll": 401.2, "kl": 21.9,   # mean per sequence; elbo = -(nll + kl)
        "nats_per_dim": 0.078, "bits_per_dim": 0.113,
        "iwae": {"K": 100, "bound_per_step": -6.8, "bound": -418.0, "nats_per_dim": 0.077, "bits_per_dim": 0.111},
        "fivo": {...}               # the same keys, with bounds including "fivo"
      },
      "sequences": [                # one entry per sequence, in the data's order
        {"sequence": 0, "steps": 50, "elbo": -350.2, "iwae": -345.9,
         "elbo_per_step": -7.0, "iwae_per_step": -6.9, "step_elbo": [...]}   # step_elbo with per_step=True
      ]                             # (and "fivo", "fivo_per_step" with bounds including "fivo")
    }
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from vrnnkit._version import __version__
from vrnnkit.data.varlen import pad_collate
from vrnnkit.errors import DataError, check_counts
from vrnnkit.model import VRNN
from vrnnkit.model.objectives import fivo_log_likelihood, parse_bounds


@torch.no_grad()
def evaluate_variable_length(
    model: VRNN, sequences: Sequence[np.ndarray], *, iwae_samples: int = 100, batch_size: int = 16,
    chunk_size: int | None = None, seed: int = 0, per_step: bool = False,
    bounds: str | Sequence[str] = ("elbo", "iwae"), particles: int | None = None,
) -> dict[str, Any]:
    """The ELBO and the IWAE and FIVO bounds that ``bounds`` names (K = ``particles``, by
    default ``iwae_samples``) of ``sequences`` (the schema above);
    ``per_step`` adds each step's ELBO term, ``log p(x_t | ...) - KL_t``, to every sequence
    (from a pass over each sequence alone, whose sum is then that sequence's ELBO)."""
    check_counts(iwae_samples=iwae_samples, batch_size=batch_size)
    if particles is not None:
        check_counts(particles=particles)
        iwae_samples = particles
    bounds = parse_bounds(bounds)
    frame_shape = tuple(model.config.frame_shape)
    items = [_item(s, i, frame_shape) for i, s in enumerate(sequences)]
    if not items:
        raise DataError("expected at least one sequence to evaluate, found none")
    if model.config.likelihood_support == "unit-interval":
        bad = next((i for i, s in enumerate(items) if s.min() < 0 or s.max() > 1), None)
        if bad is not None:
            raise DataError(f"sequence {bad} has values outside [0, 1], which the {model.config.likelihood} likelihood needs")
    parameter = next(model.parameters())
    elbo_gen, iwae_gen, step_gen, fivo_gen = (
        torch.Generator().manual_seed(int(s)) for s in np.random.SeedSequence(seed).generate_state(4))
    lengths = np.array([len(s) for s in items])
    elbo = np.zeros(len(items))
    scores = {name: np.zeros(len(items)) for name in ("iwae", "fivo") if name in bounds}
    nll = kl = 0.0  # sums over sequences (the output holds batch means)
    was_training = model.training
    model.eval()
    try:
        order = np.argsort(lengths, kind="stable")
        for start in range(0, len(order), batch_size):
            rows = order[start : start + batch_size]
            x, mask = pad_collate([items[i] for i in rows])
            x, mask = x.to(parameter.device, parameter.dtype), mask.to(parameter.device, parameter.dtype)
            out = model(x, mask=mask, generator=elbo_gen)
            elbo[rows] = out.elbo.double().cpu().numpy()
            nll, kl = nll + float(out.nll) * len(rows), kl + float(out.kl) * len(rows)
            if "iwae" in scores:
                scores["iwae"][rows] = model.log_likelihood(
                    x, iwae_samples, mask=mask, chunk_size=chunk_size, generator=iwae_gen).double().cpu().numpy()
            if "fivo" in scores:
                scores["fivo"][rows] = fivo_log_likelihood(model, x, iwae_samples, mask=mask, generator=fivo_gen).double().cpu().numpy()
        steps_of = [_step_elbo(model, s.to(parameter.device, parameter.dtype), step_gen) for s in items] if per_step else None
        if steps_of is not None:  # one pass per sequence: its ELBO is the sum of its step terms
            elbo = np.array([sum(values) for values in steps_of])
    finally:
        model.train(was_training)
    return _report(frame_shape, lengths, elbo, nll, kl, scores, iwae_samples, seed, steps_of)


def _item(sequence: Any, index: int, frame_shape: tuple[int, ...]) -> torch.Tensor:
    item = torch.as_tensor(np.asarray(sequence, np.float32))
    if item.dim() < 1 or item.shape[0] < 1 or tuple(item.shape[1:]) != frame_shape:
        raise DataError(f"sequence {index} has shape {tuple(item.shape)}; the model takes (steps, {', '.join(map(str, frame_shape))})")
    return item


def _step_elbo(model: VRNN, sequence: torch.Tensor, generator: torch.Generator) -> list[float]:
    out = model(sequence[None], generator=generator)
    return (-(out.nll_per_step + out.kl_per_step)).double().cpu().tolist()


def _report(
    frame_shape: tuple[int, ...], lengths: np.ndarray, elbo: np.ndarray, nll: float, kl: float,
    scores: dict[str, np.ndarray], k: int, seed: int, steps_of: list[list[float]] | None,
) -> dict[str, Any]:
    steps = int(lengths.sum())
    dims = steps * math.prod(frame_shape)
    per_sequence = []
    for i, length in enumerate(lengths.tolist()):
        entry: dict[str, Any] = {"sequence": i, "steps": length, "elbo": float(elbo[i])}
        entry.update({name: float(values[i]) for name, values in scores.items()})
        entry["elbo_per_step"] = float(elbo[i]) / length
        entry.update({f"{name}_per_step": float(values[i]) / length for name, values in scores.items()})
        if steps_of is not None:
            entry["step_elbo"] = steps_of[i]
        per_sequence.append(entry)
    likelihood: dict[str, Any] = {
        "elbo_per_step": float(elbo.sum()) / steps, "elbo": float(elbo.mean()), "nll": nll / len(lengths), "kl": kl / len(lengths),
        "nats_per_dim": -float(elbo.sum()) / dims, "bits_per_dim": -float(elbo.sum()) / dims / math.log(2.0),
    }
    for name, values in scores.items():
        likelihood[name] = {"K": k, "bound_per_step": float(values.sum()) / steps, "bound": float(values.mean()),
                            "nats_per_dim": -float(values.sum()) / dims, "bits_per_dim": -float(values.sum()) / dims / math.log(2.0)}
    return {"vrnnkit_version": __version__, "num_sequences": len(lengths), "num_steps": steps,
            "frame_shape": list(frame_shape), "seed": seed, "likelihood": likelihood, "sequences": per_sequence}
