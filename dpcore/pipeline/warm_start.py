"""A public warm start: adapters and head trained without privacy on public reports, before a private run.

For MIMIC-CXR or CT-RATE the synthetic corpus of the same kind is public data. For a synthetic private
corpus the public sample is a disjoint draw (another seed) of the *same generator*, so it is as close to the
private data as public data can be: a warm start from it flatters the private run, and the book says so.
Training on public data spends no privacy; the private run's accountant starts from zero as before.
"""

from __future__ import annotations

import time
from typing import Any

from dpcore.config import RunConfig
from dpcore.pipeline.splits import prepare_splits
from dpcore.training import InitialWeights
from dpcore.training import train as train_engine

# The public sample's data seed is the private corpus's seed plus this, so the two are different draws.
PUBLIC_SEED_OFFSET = 1_000
# The public corpus of each label set.
PUBLIC_CORPORA = {"chexpert": "synthetic-cxr", "ctrate": "synthetic-ct"}
NON_PRIVATE = {"dp-lora": "lora", "dp-full": "full"}


# Public runs trained in this process, by configuration hash: a study's DP runs share one warm start.
_CACHE: dict[str, InitialWeights] = {}


def public_config(cfg: RunConfig) -> RunConfig:
    """The non-private run on public reports that ``cfg``'s warm start trains: same model and adapters,
    the non-private mode's default schedule, the public corpus at a disjoint seed.

    >>> cfg = RunConfig.from_flat({"mode": "dp-lora", "epsilon": 1.0, "warm_start": "synthetic"})
    >>> pub = public_config(cfg)
    >>> pub.train.mode, pub.data.corpus, pub.data.data_seed, pub.privacy.epsilon, pub.train.warm_start
    ('lora', 'synthetic-cxr', 1000, None, None)
    """
    if cfg.train.warm_start is None:
        raise ValueError("the run has no warm_start")
    corpus = PUBLIC_CORPORA.get(cfg.teacher.label_set)
    if corpus is None:
        raise ValueError(f"no public synthetic corpus carries {cfg.teacher.label_set!r} labels")
    flat: dict[str, Any] = cfg.to_flat()
    for name in ("epochs", "batch_size", "learning_rate", "head_learning_rate", "physical_batch_size"):
        flat[name] = None  # the public run takes its own mode's tuned schedule
    for name in ("epsilon", "noise_multiplier", "max_epsilon", "delta", "max_reports_per_patient", "secure"):
        flat[name] = None
    # Public data need no unit of privacy, and no membership losses: a public run is the same for both units.
    flat.update(privacy_unit="report", membership_sample=0)
    flat.update(
        corpus=corpus,
        data_path=None,
        n_reports=cfg.train.warm_start_reports,
        data_seed=cfg.data.data_seed + PUBLIC_SEED_OFFSET,
        mode=NON_PRIVATE.get(cfg.train.mode, cfg.train.mode),
        warm_start=None,
        threshold_policy="fixed",
    )
    return RunConfig.from_flat(flat)


def warm_start(cfg: RunConfig) -> InitialWeights:
    """Train (once per process and public configuration) the public run of ``cfg``; its trainable weights,
    with what they are (corpus, reports, the public run's hash and its F1 on its own test split)."""
    public = public_config(cfg)
    key = public.config_hash()
    if key not in _CACHE:
        t0 = time.perf_counter()
        result = train_engine(public, prepare_splits(public), progress=False, keep_model=True)
        assert result.model is not None
        weights = {n: p.detach().clone() for n, p in result.model.named_parameters() if p.requires_grad}
        source = {
            "corpus": cfg.train.warm_start,
            "reports": public.data.n_reports,
            "config_hash": key,
            "public_test_weighted_f1": result.weighted_f1,
            "seconds": time.perf_counter() - t0,
        }
        _CACHE[key] = InitialWeights(weights, source)
    return _CACHE[key]
