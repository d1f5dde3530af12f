import math

import pytest

from dpcore.privacy import check_delta, default_delta, epsilon_spent, epsilons, noise_for_epsilon


def test_rdp_reproduces_opacus_published_value():
    # Opacus's accountant test: sigma 1.5, q 0.04, 90 epochs = int(90 / 0.04) steps, delta 1e-5.
    eps = epsilon_spent(history=[(1.5, 0.04, int(90 / 0.04))], delta=1e-5, accountant="rdp")
    assert eps == pytest.approx(7.32911, abs=1e-5)


def test_prv_reproduces_opacus_published_value():
    # Opacus's PRV test counts its steps as 90 // 0.04, which floating point makes 2249, not 2250.
    steps = int(90 // 0.04)
    assert steps == 2249
    eps = epsilon_spent(history=[(1.5, 0.04, steps)], delta=1e-5, accountant="prv")
    assert eps == pytest.approx(6.77740, abs=1e-5)


def test_prv_is_tighter_than_rdp():
    e = epsilons(history=[(1.1, 256 / 60000, 14062)], delta=1e-5)
    assert e["prv"] < e["rdp"]


@pytest.mark.parametrize("accountant", ["rdp", "prv"])
@pytest.mark.parametrize("target", [0.01, 1.0, 10.0])
def test_noise_for_epsilon_meets_the_budget_tightly(accountant, target):
    sigma = noise_for_epsilon(
        target_epsilon=target, delta=1e-5, sample_rate=0.03, steps=200, accountant=accountant
    )
    eps = epsilon_spent(history=[(sigma, 0.03, 200)], delta=1e-5, accountant=accountant)
    assert eps <= target
    assert eps >= 0.9 * target  # not wastefully noisy


def test_more_noise_spends_less():
    low, high = (epsilon_spent(history=[(s, 0.01, 500)], delta=1e-5, accountant="rdp") for s in (0.8, 1.6))
    assert high < low


def test_no_noise_is_infinite_epsilon_and_no_steps_is_zero():
    assert math.isinf(epsilon_spent(history=[(0.0, 0.1, 10)], delta=1e-5, accountant="rdp"))
    assert epsilon_spent(history=[], delta=1e-5, accountant="prv") == 0.0


@pytest.mark.parametrize("n", [1, 7, 100, 2000, 50232, 10**6])
def test_default_delta_is_below_one_over_n(n):
    d = default_delta(n)
    assert d <= 1 / (10 * n)
    assert check_delta(d, n) == d


def test_delta_at_or_above_one_over_n_is_refused():
    with pytest.raises(ValueError, match="must be below 1/N"):
        check_delta(1e-3, 1000)
