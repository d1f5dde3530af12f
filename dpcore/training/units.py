"""Units of privacy: which training reports one unit owns (a report, or a patient with all their reports), and
how a logical batch of sampled units becomes physical chunks that keep every unit whole.

Clipping bounds one *unit's* contribution to a step, and the accountant counts units: at the report unit a
patient with k reports is protected only by group privacy (see :func:`dpcore.privacy.group_privacy`); at the
patient unit, one patient's reports are one clipped contribution, so the guarantee is the patient's.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from dpcore.training.data import length_sorted_chunks


@dataclass(frozen=True)
class PrivacyUnits:
    """Training reports grouped into units: ``reports[u]`` holds the report indices of unit ``u``.

    >>> units = PrivacyUnits.of_patients(["a", "b", "a", "c", "a"], cap=2)
    >>> len(units), [r.tolist() for r in units.reports], units.dropped
    (3, [[0, 2], [1], [3]], 1)
    >>> len(PrivacyUnits.of_reports(4))
    4
    """

    kind: str
    reports: list[torch.Tensor]
    dropped: int = 0  # reports left out by the per-patient cap

    @classmethod
    def of_reports(cls, n: int) -> PrivacyUnits:
        return cls("report", [torch.tensor([i]) for i in range(n)])

    @classmethod
    def of_patients(cls, patient_ids: Sequence[str], *, cap: int | None) -> PrivacyUnits:
        """One unit a patient, in order of first appearance; a patient's first ``cap`` reports are kept (a
        cap chosen before seeing the data, so it costs no privacy)."""
        members: dict[str, list[int]] = {}
        for i, pid in enumerate(patient_ids):
            members.setdefault(str(pid), []).append(i)
        kept = [m[:cap] if cap is not None else m for m in members.values()]
        dropped = sum(len(m) for m in members.values()) - sum(len(m) for m in kept)
        return cls("patient", [torch.tensor(m) for m in kept], dropped)

    def __len__(self) -> int:
        return len(self.reports)

    @property
    def n_reports(self) -> int:
        return sum(len(r) for r in self.reports)

    def chunks(
        self, units: torch.Tensor, lengths: torch.Tensor, size: int
    ) -> list[tuple[torch.Tensor, torch.Tensor | None]]:
        """The reports of the sampled ``units`` as physical chunks of about ``size`` reports, sorted by
        length: ``(report indices, group)`` where ``group[i]`` numbers the unit of report ``i`` within its
        chunk (None at the report unit, where every report is its own unit). A unit is never split across
        chunks, because each chunk is clipped on its own before the step sums them.

        >>> units = PrivacyUnits.of_patients(["a", "b", "a"], cap=None)
        >>> [(r.tolist(), g.tolist()) for r, g in units.chunks(torch.tensor([0, 1]), torch.tensor([3, 1, 2]), 2)]
        [([1], [0]), ([0, 2], [0, 0])]
        """
        if self.kind == "report":
            return [(c, None) for c in length_sorted_chunks(units, lengths, size)]
        longest = torch.tensor([int(lengths[self.reports[u]].max()) for u in units.tolist()])
        out: list[tuple[torch.Tensor, torch.Tensor | None]] = []
        rows: list[torch.Tensor] = []
        for u in units[torch.argsort(longest, stable=True)].tolist():
            members = self.reports[u]
            if rows and sum(len(r) for r in rows) + len(members) > size:
                out.append(_chunk(rows))
                rows = []
            rows.append(members)
        if rows:
            out.append(_chunk(rows))
        return out


def _chunk(rows: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    groups = torch.cat([torch.full((len(r),), k) for k, r in enumerate(rows)])
    return torch.cat(rows), groups


def max_reports_per_patient(patient_ids: Sequence[str]) -> int:
    """The largest number of reports one patient has (1 for an empty list).

    >>> max_reports_per_patient(["a", "b", "a"])
    2
    """
    counts: dict[str, int] = {}
    for pid in patient_ids:
        counts[str(pid)] = counts.get(str(pid), 0) + 1
    return max(counts.values(), default=1)
