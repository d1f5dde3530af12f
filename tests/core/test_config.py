import pytest

from dpcore.config import RunConfig, flat_parameter_names


def test_defaults_are_valid_and_flat_round_trip():
    cfg = RunConfig()
    assert RunConfig.from_flat(cfg.to_flat()) == cfg
    assert RunConfig.from_dict(cfg.to_dict()) == cfg
    assert sorted(cfg.to_flat()) == sorted(flat_parameter_names())


def test_flat_names_are_unique_across_sections():
    names = flat_parameter_names()
    assert len(names) == len(set(names))


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"mode": "dp-lora"}, "exactly one of epsilon or noise_multiplier, got neither"),
        ({"mode": "dp-lora", "epsilon": 1.0, "noise_multiplier": 1.0}, "got both"),
        ({"mode": "lora", "epsilon": 1.0}, "only apply to DP modes"),
        ({"mode": "dp-sgd"}, "mode must be one of"),
        ({"epsilon": -1.0, "mode": "dp-lora"}, "epsilon must be positive"),
        ({"delta": 2.0, "mode": "dp-lora", "epsilon": 1.0}, "delta must be in"),
        ({"split_fractions": [0.5, 0.5, 0.5]}, "split_fractions"),
        ({"uncertainty_policy": "maybe"}, "unknown uncertainty_policy"),
        ({"no_such_thing": 1}, "unknown parameters ['no_such_thing']"),
    ],
)
def test_invalid_configs_say_what_is_wrong(params, message):
    with pytest.raises(ValueError) as err:
        RunConfig.from_flat(params)
    assert message in str(err.value)


def test_hash_is_stable_and_sensitive():
    a = RunConfig.from_flat({"mode": "dp-lora", "epsilon": 1.0})
    assert a.config_hash() == RunConfig.from_flat({"epsilon": 1.0, "mode": "dp-lora"}).config_hash()
    assert a.config_hash() != a.replace(epsilon=10.0).config_hash()
    # Lists and tuples are the same parameter value.
    assert a.replace(lora_targets=["query"]).config_hash() == a.replace(lora_targets=("query",)).config_hash()


def test_numbers_written_as_text_are_numbers():
    # YAML 1.1 (the --set parser, config files) reads 1e-3 without a dot as a string.
    cfg = RunConfig.from_flat({"learning_rate": "1e-3", "n_reports": "1e4", "mode": "dp-lora", "epsilon": 10})
    assert cfg.train.learning_rate == 0.001 and cfg.data.n_reports == 10_000
    assert cfg.config_hash() == RunConfig.from_flat({**cfg.to_flat(), "epsilon": 10.0}).config_hash()
    with pytest.raises(ValueError, match="learning_rate must be a number, got 'fast'"):
        RunConfig.from_flat({"learning_rate": "fast"})


@pytest.mark.parametrize("mode", ["full", "lora", "dp-lora", "dp-full"])
def test_schedule_defaults_are_per_mode_and_explicit_values_win(mode):
    extra = {"epsilon": 1.0} if mode.startswith("dp") else {}
    cfg = RunConfig.from_flat({"mode": mode, **extra})
    resolved = cfg.train.resolved()
    assert None not in (
        resolved.epochs,
        resolved.batch_size,
        resolved.learning_rate,
        resolved.head_learning_rate,
    )
    assert cfg.replace(batch_size=7).train.resolved().batch_size == 7
    # Changing the mode re-resolves the defaults instead of carrying the old mode's values.
    other = "lora" if mode != "lora" else "full"
    assert (
        cfg.replace(mode=other, epsilon=None).train.resolved()
        == RunConfig.from_flat({"mode": other}).train.resolved()
    )


def test_dp_schedules_use_larger_batches_than_their_non_private_twins():
    for private, plain in (("dp-lora", "lora"), ("dp-full", "full")):
        dp = RunConfig.from_flat({"mode": private, "epsilon": 1.0}).train.resolved()
        assert dp.batch_size > RunConfig.from_flat({"mode": plain}).train.resolved().batch_size
