"""The registry of released fields: every field a run's result (JSON) or a saved model's manifest holds is
either covered by epsilon or listed outside it, with what it reveals.

*Covered* means its release is within the guarantee: it was chosen before the data was seen (the
configuration, the software, the label set) or is the DP-trained model's own. *Outside* means it was
computed from private data without noise, or reveals the number N of training units, which the accountants
treat as public (the sample rate, the steps, δ and the ε computed from them are functions of N). Each
outside entry says what it reveals.

A key names a field by its dotted path with list positions dropped (``epochs.seconds`` for the seconds of
every epoch); a key covers every field under it (``metrics`` covers ``metrics.test_vs_teacher.f1.macro``).
The longest key that matches decides. :func:`unlisted` finds the fields of a document that no key covers:
a new field must be registered here before it can be released.

>>> unlisted({"config": {"seed": 0}, "timings": {"train_seconds": 1.0}, "surprise": 1}, registry=RESULT)
['surprise']
>>> lookup("epochs.seconds", registry=RESULT)[0]
'outside'
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

COVERED, OUTSIDE = "covered", "outside"
Registry = Mapping[str, tuple[str, str]]  # dotted key -> (COVERED or OUTSIDE, why / what it reveals)

# What N reveals is repeated below: the accounting is public only if N is.
_N = "N, the number of training units, within the batch size (the accountants treat N as public)"
_SETTING = "a setting of the mechanism, from the configuration"

PRIVACY: dict[str, tuple[str, str]] = {
    "privacy.accountant": (COVERED, _SETTING),
    "privacy.max_grad_norm": (COVERED, _SETTING),
    "privacy.target_epsilon": (COVERED, _SETTING),
    "privacy.max_epsilon": (COVERED, _SETTING),
    "privacy.poisson_sampling": (COVERED, _SETTING),
    "privacy.grad_sample_mode": (COVERED, _SETTING),
    "privacy.unit": (COVERED, _SETTING),
    "privacy.secure_rng": (COVERED, "whether the generators were seeded from the OS's entropy (a setting)"),
    "privacy.sample_rate": (OUTSIDE, f"q = 1 / ceil(N / batch size): reveals {_N}"),
    "privacy.steps": (
        OUTSIDE,
        f"ceil(N / batch size) steps an epoch, or where a budget ran out: reveals {_N}",
    ),
    "privacy.delta": (
        OUTSIDE,
        "by default a power of ten at most 1 / (10 N): reveals N's order of magnitude",
    ),
    "privacy.noise_multiplier": (OUTSIDE, f"for a target ε, found from q, the steps and δ: reveals {_N}"),
    "privacy.epsilon_rdp": (OUTSIDE, f"the RDP accountant's ε from σ, q, the steps and δ: reveals {_N}"),
    "privacy.epsilon_prv": (OUTSIDE, f"the PRV accountant's ε from σ, q, the steps and δ: reveals {_N}"),
    "privacy.stop_reason": (OUTSIDE, f"why training stopped, and after how many steps: reveals {_N}"),
    "privacy.units": (OUTSIDE, "the exact number of units (reports or patients) in the training split"),
    "privacy.max_reports_per_patient": (
        OUTSIDE,
        "the largest number of reports one patient has in the training split",
    ),
    "privacy.group_epsilon": (
        OUTSIDE,
        "derived from the largest number of reports per patient (a private count)",
    ),
    "privacy.group_delta": (
        OUTSIDE,
        "derived from the largest number of reports per patient (a private count)",
    ),
}

_SETTINGS = "the run's settings (the configuration and the machine), not the data"
_TIME = (
    "depends on N, on how many reports each Poisson draw took and on their lengths (a timing side channel)"
)

RESULT: dict[str, tuple[str, str]] = {
    **PRIVACY,
    "config": (COVERED, "the configuration, chosen before the data is seen"),
    "config_hash": (COVERED, "a hash of the configuration"),
    "label_names": (COVERED, "the label set's names (public)"),
    "parameters": (COVERED, "parameter counts, fixed by the architecture"),
    "versions": (COVERED, "library versions"),
    "code_fingerprint": (COVERED, "a hash of the code"),
    "covered_by_epsilon": (COVERED, "this registry's own text"),
    "outside_epsilon": (COVERED, "this registry's own text"),
    "extra.world_size": (COVERED, _SETTINGS),
    "extra.physical_batch_size": (COVERED, _SETTINGS),
    "extra.precision": (COVERED, _SETTINGS),
    "extra.precision_probe": (COVERED, "a start-up benchmark of the machine on a fixed random matrix"),
    "extra.attention": (COVERED, _SETTINGS),
    "extra.schedule": (COVERED, _SETTINGS),
    "extra.privacy_warning": (COVERED, "a fixed text, present when the configuration tunes thresholds"),
    "epochs.epoch": (COVERED, "the epoch's number"),
    "epochs.train_loss": (OUTSIDE, "mean training loss per epoch, on private training reports without noise"),
    "epochs.val_loss": (OUTSIDE, "validation loss per epoch, on private validation reports without noise"),
    "epochs.steps": (OUTSIDE, f"steps taken by the epoch's end: reveals {_N}"),
    "epochs.seconds": (OUTSIDE, f"seconds of the epoch (training and validation): {_TIME}"),
    "epochs.train_seconds": (OUTSIDE, f"seconds of the epoch's training loop: {_TIME}"),
    "epochs.epsilon_rdp": (OUTSIDE, f"ε spent by the epoch's end (RDP): reveals {_N}"),
    "epochs.epsilon_prv": (OUTSIDE, f"ε spent by the epoch's end (PRV): reveals {_N}"),
    "metrics": (
        OUTSIDE,
        "test and validation metrics and their counts (support, F1, intervals), on private reports without noise",
    ),
    "data": (OUTSIDE, "the exact number of reports in each split"),
    "timings": (
        OUTSIDE,
        f"seconds of training, of the frozen layers' features and of the whole run: {_TIME}",
    ),
    "peak_memory_mb": (
        OUTSIDE,
        "the process's peak memory: depends on the largest sampled physical batch and the longest reports",
    ),
    "extra.stop_reason": (OUTSIDE, f"why training stopped, and after how many steps: reveals {_N}"),
    "extra.thresholds": (OUTSIDE, "per-label thresholds tuned on the private validation split without noise"),
    "extra.membership": (
        OUTSIDE,
        "per-example losses of training and test reports (a membership attack's input)",
    ),
    "extra.warm_start": (OUTSIDE, "the public model's scores on the private test split, without noise"),
}

MANIFEST: dict[str, tuple[str, str]] = {
    **PRIVACY,
    **{
        k: RESULT[k] for k in ("config", "config_hash", "label_names", "code_fingerprint", "versions", "data")
    },
    **{k: RESULT[k] for k in ("covered_by_epsilon", "outside_epsilon")},
    "format": (COVERED, "the folder's format"),
    "format_version": (COVERED, "the folder's format"),
    "weights": (COVERED, "what kind of weights the folder holds, fixed by the configuration"),
    "base_model": (COVERED, "the public base encoder: name, path, layers and its weights' hash"),
    "label_set": (COVERED, "the label set (public)"),
    "text_column": (COVERED, "a setting, from the configuration"),
    "max_length": (COVERED, "a setting, from the configuration"),
    "pooling": (COVERED, "a setting, from the configuration"),
    "attention": (COVERED, "the attention kernel, chosen for the machine"),
    "threshold_source": (COVERED, "where the thresholds came from, fixed by the configuration"),
    "privacy_warning": (COVERED, "a fixed text, present when the configuration tunes thresholds"),
    "saved_at": (COVERED, "when the folder was saved"),
    "metrics": (OUTSIDE, "test F1 (weighted, micro, macro), on private test reports without noise"),
    "reference_labels": (OUTSIDE, "whether the private test split has reference labels"),
    "thresholds": (
        OUTSIDE,
        "the decision thresholds: tuned on the private validation split without noise when threshold_source "
        "is 'validation' (the configuration's otherwise)",
    ),
    "stop_reason": RESULT["extra.stop_reason"],
}


def leaf_paths(data: Any, prefix: str = "") -> Iterator[str]:
    """Dotted paths of the leaves of a JSON document, list positions dropped (a list of plain values, or an
    empty one, is one leaf). A None releases nothing (``privacy`` of a non-private run): it has no path."""
    if data is None:
        return
    if isinstance(data, Mapping) and data:
        for key, value in data.items():
            yield from leaf_paths(value, f"{prefix}.{key}" if prefix else str(key))
    elif isinstance(data, list) and any(isinstance(v, (Mapping, list)) for v in data):
        for value in data:
            yield from leaf_paths(value, prefix)
    else:
        yield prefix


def lookup(path: str, *, registry: Registry) -> tuple[str, str] | None:
    """The entry of the longest key that is ``path`` or a dotted prefix of it (None: unlisted)."""
    parts = path.split(".")
    for k in range(len(parts), 0, -1):
        entry = registry.get(".".join(parts[:k]))
        if entry is not None:
            return entry
    return None


def unlisted(document: Mapping[str, Any], *, registry: Registry) -> list[str]:
    """The fields of ``document`` that no key of ``registry`` covers, sorted."""
    return sorted({p for p in leaf_paths(document) if lookup(p, registry=registry) is None})


def outside_fields(document: Mapping[str, Any], *, registry: Registry) -> dict[str, str]:
    """The outside-epsilon keys of ``registry`` that ``document`` holds, each with what it reveals.

    >>> outside_fields({"data": {"train": 8}, "config": {}}, registry=RESULT)
    {'data': 'the exact number of reports in each split'}
    """
    out = {}
    for path in leaf_paths(document):
        parts = path.split(".")
        for k in range(len(parts), 0, -1):
            key = ".".join(parts[:k])
            if key in registry:
                if registry[key][0] == OUTSIDE:
                    out[key] = registry[key][1]
                break
    return dict(sorted(out.items()))
