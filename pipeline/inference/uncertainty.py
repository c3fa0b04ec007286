"""Voxel-wise uncertainty of a prediction from its passes: mirrored TTA passes and ensemble members.

A model with ``P`` passes (``P`` = the mirrored passes of each member, summed over the members)
averages their probabilities into the mean ``p̄`` it decodes. Two maps follow, both in [0, 1]:

* **entropy** ``H(p̄) / log(C)``: the entropy of the mean probabilities over the ``C`` classes
  (``softmax``), or the mean binary entropy of the TC, WT and ET probabilities over ``log 2``
  (``regions``). 0 where the prediction is certain, 1 where every class is equally likely.
  Defined for a single pass too.
* **disagreement** ``H(p̄) / log(C) - mean_i H(p_i) / log(C)``: the mutual information between
  the prediction and the pass, i.e. the mean Kullback-Leibler divergence of the passes from
  their mean, normalised the same way. 0 where every pass gives the same probabilities; only
  with more than one pass. Passes are weighted as the mean weighs them (each member equally,
  its mirrored passes equally within it).

Per case, :func:`uncertainty_scores` averages each map over the predicted whole tumour (0 when no
tumour is predicted): a high score marks a prediction to check first.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import torch

from pipeline.tasks.labels import BACKGROUND

__all__ = ["Uncertainty", "normalised_entropy", "uncertainty_maps", "uncertainty_scores"]

#: Smallest probability inside a logarithm (the entropy of a certain pass is then 0 to float precision).
_EPS = 1e-12


def normalised_entropy(probabilities: torch.Tensor, output_mode: str, dim: int = 0) -> torch.Tensor:
    """Entropy of class probabilities over ``dim``, divided by ``log(C)``; for ``regions`` the mean binary entropy over ``log 2``.

    Args:
        probabilities: softmax probabilities or sigmoid region probabilities, channels along ``dim``.
        output_mode: ``softmax`` or ``regions``.
        dim: the channel dimension.

    Returns:
        Values in [0, 1], ``dim`` removed.
    """
    p = probabilities.float().clamp(0.0, 1.0)
    if output_mode == "regions":
        binary = -(p * torch.log(p.clamp_min(_EPS)) + (1 - p) * torch.log((1 - p).clamp_min(_EPS)))
        return (binary.mean(dim=dim) / math.log(2)).clamp(0.0, 1.0)
    channels = p.shape[dim]
    entropy = -(p * torch.log(p.clamp_min(_EPS))).sum(dim=dim)
    return (entropy / math.log(channels)).clamp(0.0, 1.0)


@dataclass(frozen=True)
class Uncertainty:
    """The uncertainty of one case's prediction.

    Attributes:
        entropy: normalised entropy of the mean probabilities, float32 in [0, 1], on the case's grid.
        disagreement: normalised mutual information of the passes, float32 in [0, 1] (None with one pass).
        passes: the number of passes averaged (mirrored passes x members).
        scores: per-case scores (:func:`uncertainty_scores`).
    """

    entropy: np.ndarray
    disagreement: np.ndarray | None
    passes: int
    scores: dict[str, float] = field(default_factory=dict)


def uncertainty_maps(
    probabilities: torch.Tensor, mean_pass_entropy: torch.Tensor, passes: int, output_mode: str
) -> tuple[np.ndarray, np.ndarray | None]:
    """The entropy map and (with more than one pass) the disagreement map, float32 in [0, 1].

    Args:
        probabilities: the mean probabilities ``(K, ...)``.
        mean_pass_entropy: the mean over the passes of each pass's :func:`normalised_entropy` ``(...)``.
        passes: how many passes were averaged.
        output_mode: ``softmax`` or ``regions``.
    """
    entropy = normalised_entropy(probabilities, output_mode, dim=0)
    disagreement = (entropy - mean_pass_entropy.float()).clamp(0.0, 1.0) if passes > 1 else None
    return entropy.cpu().numpy().astype(np.float32), disagreement.cpu().numpy().astype(np.float32) if disagreement is not None else None


def uncertainty_scores(entropy: np.ndarray, disagreement: np.ndarray | None, labels: np.ndarray) -> dict[str, float]:
    """Mean entropy (and disagreement) over the predicted whole tumour (``labels`` > background); 0 without tumour.

    Returns:
        ``{"uncertainty_entropy_WT": ..., "uncertainty_disagreement_WT": ...}`` (the second with a disagreement map only).
    """
    tumour = np.asarray(labels) > BACKGROUND
    maps = {"entropy": entropy, "disagreement": disagreement}
    return {
        f"uncertainty_{name}_WT": round(float(values[tumour].mean()) if tumour.any() else 0.0, 6)
        for name, values in maps.items()
        if values is not None
    }
