"""A planted bug in Opacus, for showing (and testing) that the audit catches a broken guarantee.

The bug lives in Opacus's optimizer, not in dpcore: dpcore still computes the noise for the target ε and
its accountants still report that ε from the history ``(σ, q, steps)``; only the step itself is wrong. A run
trained inside :func:`noise_disabled` therefore *claims* ε while adding no noise, which is the kind of bug
(a noise multiplier lost on the way to the optimizer) an audit exists to catch.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any
from unittest import mock

from opacus.optimizers.optimizer import DPOptimizer


@contextlib.contextmanager
def noise_disabled() -> Iterator[None]:
    """Within the block, every Opacus DP optimizer built runs with noise multiplier 0 (clipping stays)."""

    original = DPOptimizer.__init__

    def without_noise(self: Any, *args: Any, **kwargs: Any) -> None:
        original(self, *args, **kwargs)
        self.noise_multiplier = 0.0  # the bug: the σ the accountant was told about never reaches the step

    with mock.patch.object(DPOptimizer, "__init__", without_noise):
        yield
