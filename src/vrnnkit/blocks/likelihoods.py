"""Observation models p(x_t | z_t, h_{t-1}), from the decoder's (N, P, *frame) output.

Every ``log_prob`` returns the log-density of a whole frame (summed over its elements), in nats.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from vrnnkit.blocks.base import Likelihood
from vrnnkit.blocks.distributions import normal_log_prob, positive_std, rand, randn
from vrnnkit.blocks.layers import check_positive
from vrnnkit.registry import register


def _per_frame(x: Tensor) -> Tensor:
    return x.flatten(1).sum(1)


def _randn_like(x: Tensor, generator: torch.Generator | None) -> Tensor:
    return randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)


def _check_min_std(min_std: float) -> None:
    if not min_std > 0:
        raise ValueError(f"min_std must be > 0, got {min_std!r}")


@register("likelihood", "bernoulli")
class Bernoulli(Likelihood):
    """Independent Bernoulli per element, parameterised by logits.

    The log-density uses the log-sigmoid form (binary cross-entropy with logits), which stays
    finite for any logit. Targets must lie in [0, 1]; grey values are accepted (the usual
    practice on MNIST-like data), but the result is then not a normalised likelihood, so its
    figures do not compare with those of a continuous likelihood.
    """

    params_per_element = 1
    support = "unit-interval"
    sample_feedback = "draw"

    def log_prob(self, params: Tensor, x: Tensor) -> Tensor:
        return -_per_frame(F.binary_cross_entropy_with_logits(params[:, 0], x, reduction="none"))

    def mean(self, params: Tensor) -> Tensor:
        return torch.sigmoid(params[:, 0])

    def frame_params(self, frame: Tensor) -> Tensor:
        # Clamped so that an exact 0 or 1 gives a finite logit (+-6.9).
        return torch.logit(frame.clamp(1e-3, 1 - 1e-3)).unsqueeze(1)

    def sample(self, params: Tensor, generator: torch.Generator | None = None) -> Tensor:
        probs = self.mean(params)
        return (rand(probs.shape, generator=generator, device=probs.device, dtype=probs.dtype) < probs).to(probs.dtype)


@register("likelihood", "gaussian")
class Gaussian(Likelihood):
    """Independent Gaussian per element.

    ``std="learned"`` (default): the decoder gives a mean and a raw scale per element, mapped to
    a standard deviation by softplus plus ``min_std``. A number: a fixed standard deviation, and
    the decoder gives only the mean. Its figures depend on the data's scale.
    """

    def __init__(self, std: float | str = "learned", min_std: float = 1e-3) -> None:
        super().__init__()
        _check_min_std(min_std)
        if std == "learned":
            self.fixed_std = None
        elif isinstance(std, (int, float)) and not isinstance(std, bool) and std > 0:
            self.fixed_std = float(std)
        else:
            raise ValueError(f"gaussian likelihood: std must be 'learned' or a positive number, got {std!r}")
        self.min_std = min_std
        self.params_per_element = 1 if self.fixed_std is not None else 2

    def _mean_std(self, params: Tensor) -> tuple[Tensor, Tensor]:
        mean = params[:, 0]
        if self.fixed_std is not None:
            return mean, torch.full_like(mean, self.fixed_std)
        return mean, positive_std(params[:, 1], self.min_std)

    def log_prob(self, params: Tensor, x: Tensor) -> Tensor:
        mean, std = self._mean_std(params)
        return _per_frame(normal_log_prob(x, mean, std))

    def mean(self, params: Tensor) -> Tensor:
        return params[:, 0]

    def frame_params(self, frame: Tensor) -> Tensor:
        zeros = torch.zeros_like(frame).unsqueeze(1).expand(-1, self.params_per_element - 1, *frame.shape[1:])
        return torch.cat([frame.unsqueeze(1), zeros], dim=1)

    def sample(self, params: Tensor, generator: torch.Generator | None = None) -> Tensor:
        mean, std = self._mean_std(params)
        return torch.addcmul(mean, std, _randn_like(mean, generator))


@register("likelihood", "gmm")
class GaussianMixture(Likelihood):
    """A mixture of ``components`` diagonal Gaussians over the whole frame: the paper's VRNN-GMM.

    The decoder gives, per element, a mixture-logit contribution, a mean and a raw scale for
    each component. The frame's mixture weights are the softmax of the per-component mean of
    those contributions, a linear read-out of the decoder like any other head, so every
    decoder block can drive it. With ``per_element=True`` each element is an independent
    mixture instead.
    """

    def __init__(self, components: int = 5, min_std: float = 1e-3, per_element: bool = False) -> None:
        super().__init__()
        check_positive(components=components)
        _check_min_std(min_std)
        self.components = components
        self.min_std = min_std
        self.per_element = per_element
        self.params_per_element = 3 * components

    def _split(self, params: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Log mixture weights (N, K) or (N, K, *frame), means and stds (N, K, *frame)."""
        logits, means, raw = params.split(self.components, dim=1)
        if not self.per_element:
            logits = logits.flatten(2).mean(2)
        return logits.log_softmax(dim=1), means, positive_std(raw, self.min_std)

    def log_prob(self, params: Tensor, x: Tensor) -> Tensor:
        log_weights, means, stds = self._split(params)
        component = normal_log_prob(x.unsqueeze(1), means, stds)
        if self.per_element:
            return _per_frame(torch.logsumexp(log_weights + component, dim=1))
        return torch.logsumexp(log_weights + component.flatten(2).sum(2), dim=1)

    def frame_params(self, frame: Tensor) -> Tensor:
        k = self.components
        zeros = torch.zeros_like(frame).unsqueeze(1).expand(-1, k, *frame.shape[1:])
        return torch.cat([zeros, frame.unsqueeze(1).expand(-1, k, *frame.shape[1:]), zeros], dim=1)

    def mean(self, params: Tensor) -> Tensor:
        log_weights, means, _ = self._split(params)
        weights = log_weights.exp()
        if not self.per_element:
            weights = weights.view(*weights.shape, *([1] * (means.dim() - 2)))
        return (weights * means).sum(1)

    def sample(self, params: Tensor, generator: torch.Generator | None = None) -> Tensor:
        log_weights, means, stds = self._split(params)
        if self.per_element:
            # Move K last so multinomial sees one distribution per element.
            probs = log_weights.exp().movedim(1, -1)
            flat = probs.reshape(-1, self.components)
            pick = _categorical(flat, generator).view(*probs.shape[:-1]).unsqueeze(1)
        else:
            pick = _categorical(log_weights.exp(), generator)
            pick = pick.view(-1, 1, *([1] * (means.dim() - 2))).expand(-1, 1, *means.shape[2:])
        mean = means.gather(1, pick).squeeze(1)
        std = stds.gather(1, pick).squeeze(1)
        return torch.addcmul(mean, std, _randn_like(mean, generator))


def _categorical(probs: Tensor, generator: torch.Generator | None) -> Tensor:
    """One draw per row of ``probs`` (N, K) -> (N, 1), on the generator's device."""
    source = generator.device if generator is not None else probs.device
    return torch.multinomial(probs.to(source), 1, generator=generator).to(probs.device)
