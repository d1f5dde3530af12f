"""The one-run audit: the bound against hand-computed cases and the paper's printed values, its monotonicity,
and runs of the tiny model: without DP (a clearly positive bound), and on every DP path (LoRA by hooks, full
fine-tuning by ghost clipping, the patient unit) with DP (never above the accountant's ε, accounted over the
natural units plus the canaries) and with Opacus's noise switched off (the audit catches it)."""

from __future__ import annotations

import argparse
import math

import numpy as np
import pytest
from scipy import stats

from dpcore.attacks import audit
from dpcore.attacks.audit import (
    AuditViolation,
    audit_scores,
    check_consistent,
    epsilon_lower_bound,
    guess_grid,
    one_run_audit,
    p_value,
)
from dpcore.attacks.audit_bugs import noise_disabled
from dpcore.attacks.cli import register
from dpcore.config import RunConfig
from dpcore.pipeline import prepare_splits
from dpcore.privacy import epsilons


# -- the bound ----------------------------------------------------------------------------------------------
def test_p_value_hand_cases():
    # ε = log 3: each guess right with probability q = 3/4. P[B >= 2], B ~ Binomial(3, 3/4) = 27/32.
    assert p_value(m=10, guesses=3, correct=2, epsilon=math.log(3), delta=0.0) == pytest.approx(27 / 32)
    # With δ: + 2 m δ max(P[B = 1] / 1, P[B in {0, 1}] / 2) = 2 * 10 * 0.01 * 9/64.
    expected = 27 / 32 + 2 * 10 * 0.01 * (9 / 64)
    assert p_value(m=10, guesses=3, correct=2, epsilon=math.log(3), delta=0.01) == pytest.approx(expected)
    assert p_value(m=10, guesses=4, correct=0, epsilon=1.0, delta=0.0) == 1.0


@pytest.mark.parametrize(
    ("m", "r", "v", "eps"), [(1000, 100, 75, 0.6), (5000, 2000, 1990, 4.0), (300, 40, 3, 0.1)]
)
def test_p_value_with_delta_matches_the_whole_sum(m: int, r: int, v: int, eps: float):
    # The library stops the max over i early; the theorem's term over every i = 1..v gives the same value.
    q = 1 / (1 + math.exp(-eps))
    tail = stats.binom.sf(v - 1, r, q)
    i = np.arange(1, v + 1)
    term = np.max((stats.binom.sf(v - i - 1, r, q) - tail) / i)
    expected = min(1.0, tail + 2 * m * 1e-5 * term)
    assert p_value(m=m, guesses=r, correct=v, epsilon=eps, delta=1e-5) == pytest.approx(expected, rel=1e-12)


@pytest.mark.parametrize("r", [5, 20, 100])
def test_all_guesses_right_without_delta_is_the_closed_form(r: int):
    q = 0.05 ** (1 / r)  # q^r = 0.05: the largest accuracy that r right guesses reject at 95%
    expected = max(0.0, math.log(q / (1 - q)))
    assert epsilon_lower_bound(m=r, guesses=r, correct=r, delta=0.0) == pytest.approx(expected, abs=1e-6)


def test_pure_epsilon_bound_is_the_binomial_quantile():
    # 70 of 100 right: the bound is the ε whose accuracy makes P[Binomial(100, q) >= 70] exactly 0.05.
    eps = epsilon_lower_bound(m=100, guesses=100, correct=70, delta=0.0)
    q = 1 / (1 + math.exp(-eps))
    assert stats.binom.sf(69, 100, q) == pytest.approx(0.05, abs=1e-6)


def test_reproduces_the_papers_printed_values():
    # Steinke, Nasr and Jagielski (arXiv:2305.08846), Appendix D's example and Section 7's figure.
    assert epsilon_lower_bound(m=1000, guesses=100, correct=75, delta=1e-4) == pytest.approx(0.673, abs=1e-3)
    assert epsilon_lower_bound(m=100_000, guesses=1510, correct=1439, delta=1e-5) == pytest.approx(
        2.675, abs=2e-3
    )


def test_monotonicity():
    eps = np.linspace(0, 5, 26)
    p = [p_value(m=500, guesses=100, correct=80, epsilon=e, delta=1e-5) for e in eps]
    assert np.all(np.diff(p) >= -1e-12)  # the p-value grows with ε, so bisection finds the bound
    by_correct = [epsilon_lower_bound(m=500, guesses=100, correct=v, delta=1e-5) for v in range(50, 101, 5)]
    assert np.all(np.diff(by_correct) >= 0) and by_correct[0] == 0 and by_correct[-1] > 3
    by_delta = [epsilon_lower_bound(m=500, guesses=100, correct=90, delta=d) for d in (0, 1e-6, 1e-4, 1e-3)]
    assert np.all(np.diff(by_delta) <= 0)
    by_conf = [
        epsilon_lower_bound(m=500, guesses=100, correct=90, delta=1e-5, confidence=c)
        for c in (0.5, 0.9, 0.95, 0.99)
    ]
    assert np.all(np.diff(by_conf) <= 0)


def test_guessing_and_the_union_bound_over_the_grid():
    rng = np.random.default_rng(0)
    included = rng.random(200) < 0.5
    scores = np.where(included, 1.0, 0.0) + rng.normal(0, 0.01, 200)  # perfectly separable
    res = audit_scores(scores=scores, included=included, delta=1e-5)
    assert [(t.k_plus, t.k_minus) for t in res.tests] == guess_grid(200)
    assert all(t.correct == t.guesses for t in res.tests[:-1])
    # All 200 guessed, 100 in and 100 out: one wrong guess for each canary beyond 100 on the larger side.
    assert res.tests[-1].correct == 200 - abs(int(included.sum()) - 100)
    best = max(res.tests, key=lambda t: t.epsilon_lower)
    corrected = 1 - 0.05 / len(res.tests)  # each test at level 0.05 / 4
    assert res.epsilon_lower == pytest.approx(
        epsilon_lower_bound(
            m=200, guesses=best.guesses, correct=best.correct, delta=1e-5, confidence=corrected
        )
    )
    single = audit_scores(scores=scores, included=included, delta=1e-5, grid=[(best.k_plus, best.k_minus)])
    assert single.epsilon_lower > res.epsilon_lower  # a pre-chosen pair pays no correction
    flipped = audit_scores(scores=-scores, included=included, delta=1e-5)
    assert flipped.epsilon_lower == 0.0 and all(t.correct == 0 for t in flipped.tests[:-1])


# -- every DP path of the tiny model, and its planted bug ------------------------------------------------------
# Each DP path with its own way of computing per-sample gradients: LoRA by Opacus's hooks, full fine-tuning by
# ghost clipping, and the patient unit (hooks, with the reports of each patient averaged into one row). The
# tiny corpus has patients with several reports; each canary is its own patient.
PATHS: dict[str, tuple[dict, str, str]] = {
    "dp-lora": ({"mode": "dp-lora"}, "hooks", "report"),
    "dp-full": ({"mode": "dp-full"}, "ghost", "report"),
    "patient": ({"mode": "dp-lora", "privacy_unit": "patient"}, "hooks", "patient"),
}
EPSILON = 0.5  # small enough that the noise-off twins, whose training ignores ε, lie far above it


@pytest.fixture(scope="module")
def audit_base(tiny_model: str) -> dict:
    # Every layer's adapters and a fast head: enough memorisation that a run without noise is caught.
    return {
        "model": tiny_model,
        "n_reports": 40,
        "max_length": 48,
        "epochs": 10,
        "batch_size": 16,
        "learning_rate": 1e-2,
        "head_learning_rate": 0.1,
    }


@pytest.fixture(scope="module")
def audits(audit_base: dict):
    """No DP; each DP path at ε = 0.5; each again with Opacus's noise off. A few seconds each."""
    splits = prepare_splits(RunConfig.from_flat(audit_base))
    out = {"full": one_run_audit(RunConfig.from_flat({**audit_base, "mode": "full"}), splits, canaries=100)}
    for path, (flat, _, _) in PATHS.items():
        private = RunConfig.from_flat({**audit_base, **flat, "epsilon": EPSILON})
        out[path] = one_run_audit(private, splits, canaries=100)
        with noise_disabled():
            out[f"{path} bug"] = one_run_audit(private, splits, canaries=100)
    return out


def test_without_dp_the_bound_is_clearly_positive(audits):
    res = audits["full"]
    assert res.epsilon_rdp is None and math.isinf(res.reported_epsilon) and res.consistent()
    assert res.bound.correct / res.bound.guesses > 0.9
    assert res.epsilon_lower > 1.5


@pytest.mark.parametrize("path", list(PATHS))
def test_with_dp_the_bound_stays_below_the_accountants_epsilon(audits, path):
    res = audits[path]
    assert (res.grad_sample_mode, res.unit) == PATHS[path][1:]
    assert 0 < res.epsilon_prv <= res.epsilon_rdp <= EPSILON + 1e-6
    assert res.epsilon_lower <= res.reported_epsilon
    assert check_consistent(res) is res


@pytest.mark.parametrize("path", list(PATHS))
def test_the_canaries_run_is_accounted_over_the_natural_units_and_the_canaries_in_it(audits, path):
    res = audits[path]
    assert res.units == res.natural_units + res.included
    assert res.sample_rate == pytest.approx(1 / math.ceil(res.units / 16))  # q from n + included
    assert res.epsilon_rdp == pytest.approx(
        epsilons(history=[(res.noise_multiplier, res.sample_rate, res.steps)], delta=res.delta)["rdp"]
    )
    if path == "patient":
        assert res.natural_units < 31  # patients, fewer than the 31 training reports


def test_a_run_accounted_over_other_units_is_refused(audit_base, monkeypatch):
    """The accounting clause's planted bug: the canaries train, but the accountant counts n alone."""
    real = audit.train

    def without_canaries(cfg, splits, **kwargs):
        result = real(cfg, splits, **kwargs)
        result.privacy.units = 31  # the natural reports only
        return result

    monkeypatch.setattr(audit, "train", without_canaries)
    cfg = RunConfig.from_flat({**audit_base, "mode": "dp-lora", "epsilon": EPSILON, "epochs": 1})
    with pytest.raises(ValueError, match=r"privacy.units: .* accounted over 31 units, not the 31 natural"):
        one_run_audit(cfg, canaries=20)


@pytest.mark.parametrize("path", list(PATHS))
def test_a_planted_bug_in_opacus_fails_the_audit(audits, path):
    dp, bug = audits[path], audits[f"{path} bug"]
    # The same run in everything the accountant sees: the configuration, σ, ε, δ, the units and the canaries.
    seen = ("config_hash", "noise_multiplier", "epsilon_rdp", "epsilon_prv", "delta", "units", "inclusion")
    assert [getattr(bug, k) for k in seen] == [getattr(dp, k) for k in seen]
    assert bug.noise_multiplier > 1 and bug.grad_sample_mode == dp.grad_sample_mode
    assert bug.epsilon_lower > bug.reported_epsilon + 0.25 and not bug.consistent()
    with pytest.raises(AuditViolation, match="exceeds the reported"):
        check_consistent(bug)


# -- the command --------------------------------------------------------------------------------------------
def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="dpcore")
    register(parser.add_subparsers(dest="command"))
    return parser


def test_one_run_command_prints_the_bound_beside_epsilon(tiny_model, tmp_path, capsys):
    sets = [f"model={tiny_model}", "n_reports=40", "max_length=48", "epochs=2", "batch_size=16", "mode=full"]
    argv = [
        "audit",
        "one-run",
        *[x for s in sets for x in ("--set", s)],
        "--canaries",
        "20",
        "--no-progress",
        "--json",
        str(tmp_path / "audit.json"),
    ]
    args = _parser().parse_args(argv)
    assert args.func(args) == 0
    out = capsys.readouterr().out
    assert "lower bound on ε at 95% confidence" in out and "consistent" in out
    assert (tmp_path / "audit.json").is_file()


def test_one_run_command_exits_non_zero_on_a_violation(audits, monkeypatch, capsys):
    monkeypatch.setattr(audit, "one_run_audit", lambda cfg, **kw: audits["dp-lora bug"])
    args = _parser().parse_args(["audit", "one-run", "--set", "mode=dp-full", "--set", "epsilon=1"])
    assert args.func(args) == 1
    assert "VIOLATION" in capsys.readouterr().out
