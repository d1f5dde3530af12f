"""Initial weights: trainable weights a run starts from instead of its fresh initialisation.

The engine does not know where they come from. The orchestration layer (:mod:`dpcore.pipeline`) trains a
public warm start and hands its weights here; the engine loads them, checks that they cover every trainable
parameter, and records ``source`` (what the weights are) in the run's result.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch


@dataclass(frozen=True)
class InitialWeights:
    """``weights``: name -> tensor for every trainable parameter; ``source``: JSON-ready provenance."""

    weights: dict[str, torch.Tensor]
    source: dict[str, Any] = field(default_factory=dict)

    def load_into(self, model: torch.nn.Module) -> None:
        """Copy the weights into ``model``'s trainable parameters; every one of them must be there.

        >>> model = torch.nn.Linear(2, 1)
        >>> InitialWeights({"weight": torch.ones(1, 2), "bias": torch.zeros(1)}).load_into(model)
        >>> model.weight.tolist()
        [[1.0, 1.0]]
        >>> InitialWeights({"weight": torch.ones(1, 2)}).load_into(model)
        Traceback (most recent call last):
        ...
        ValueError: the initial weights lack trainable parameters ['bias']
        """
        params = {n: p for n, p in model.named_parameters() if p.requires_grad}
        missing = sorted(set(params) - set(self.weights))
        if missing:
            raise ValueError(f"the initial weights lack trainable parameters {missing[:3]}")
        with torch.no_grad():
            for name, p in params.items():
                p.copy_(self.weights[name])
