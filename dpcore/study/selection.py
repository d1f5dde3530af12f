"""Choosing a schedule on validation: the rule the quick profile's non-private epochs were picked by.

Every epoch is paid for in every build, so among schedules whose validation F1 is indistinguishable from the
best (within ``EPOCH_TOLERANCE``, about the noise of a weighted F1 on a few hundred validation reports) the
cheapest wins. A study trains one schedule per mode on every corpus, so the choice must qualify on each corpus.
Validation F1 is a statistic of private data computed without noise: a choice made with it is outside epsilon
(the book marks it so).
"""

from __future__ import annotations

import pandas as pd

EPOCH_TOLERANCE = 0.01


def near_best_epochs(
    runs: pd.DataFrame, *, tolerance: float = EPOCH_TOLERANCE
) -> dict[tuple[str, str], set[int]]:
    """(corpus, mode) -> the epochs whose ``val_wf1`` is within ``tolerance`` of that pair's best."""
    return {
        (str(corpus), str(mode)): {
            int(e) for e in rows.loc[rows["val_wf1"] >= rows["val_wf1"].max() - tolerance, "epochs"]
        }
        for (corpus, mode), rows in runs.groupby(["corpus", "mode"], sort=True)
    }


def chosen_epochs(runs: pd.DataFrame, *, tolerance: float = EPOCH_TOLERANCE) -> dict[str, int]:
    """mode -> the fewest epochs within ``tolerance`` of the best validation F1 on every corpus (or, where no
    number of epochs qualifies on all of them, the largest tried).

    >>> runs = pd.DataFrame({"corpus": ["a"] * 3 + ["b"] * 3, "mode": ["lora"] * 6,
    ...                      "epochs": [3, 6, 10] * 2, "val_wf1": [0.88, 0.935, 0.94, 0.70, 0.80, 0.83]})
    >>> chosen_epochs(runs)
    {'lora': 10}
    >>> chosen_epochs(runs[runs["corpus"] == "a"])
    {'lora': 6}
    """
    near = near_best_epochs(runs, tolerance=tolerance)
    out: dict[str, int] = {}
    for mode in sorted({m for _, m in near}):
        sets = [epochs for (_, m), epochs in near.items() if m == mode]
        common = set.intersection(*sets)
        out[mode] = min(common) if common else max(max(s) for s in sets)
    return out
