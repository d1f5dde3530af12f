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


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"epochs": 2.7}, "epochs must be a whole number, got 2.7"),
        ({"n_reports": "2.5"}, "n_reports must be a whole number, got '2.5'"),
        ({"n_reports": None}, "n_reports must be a whole number, got None"),
        ({"batch_size": True}, "batch_size must be a whole number, got True"),
        ({"mode": "foo"}, "mode must be one of"),
        ({"poisson_sampling": "maybe"}, "poisson_sampling must be true or false, got 'maybe'"),
        ({"secure": "maybe"}, "secure must be true or false"),
        ({"data_path": 2024}, "data_path must be text, got 2024 (quote it"),
        ({"lora_targets": ["query", 1]}, "lora_targets item 2 must be text, got 1"),
        ({"lora_targets": "query,,value"}, "lora_targets has an empty item"),
        ({"split_fractions": [0.5, 0.5]}, "split_fractions must have 3 values, got 2"),
        ({"learning_rate": [1e-3]}, "learning_rate must be a number"),
    ],
)
def test_values_of_the_wrong_type_are_refused_naming_the_field(params, message):
    with pytest.raises(ValueError) as err:
        RunConfig.from_flat(params)
    assert message in str(err.value)


def test_every_field_checks_its_type():
    # Derived from the dataclasses' type hints, so fields added later are checked too.
    from dpcore.config import SECTIONS, field_types

    for kind in SECTIONS.values():
        for name in field_types(kind):
            with pytest.raises(ValueError, match=rf"^{name}\b"):
                RunConfig.from_flat({name: {"not": "a value"}})


def test_tuple_fields_take_one_name_or_a_comma_list():
    one = RunConfig.from_flat({"lora_targets": "query"})
    assert one.model.lora_targets == ("query",)  # not the characters q, u, e, r, y
    two = RunConfig.from_flat({"lora_targets": "query, value"})
    assert two.model.lora_targets == ("query", "value")
    assert two.config_hash() == RunConfig.from_flat({"lora_targets": ["query", "value"]}).config_hash()
    assert RunConfig.from_flat({"split_fractions": "0.6,0.2,0.2"}).data.split_fractions == (0.6, 0.2, 0.2)


def test_text_and_yaml_forms_mean_the_same_value():
    cfg = RunConfig.from_flat({"secure": "true", "delta": "null", "max_length": "64", "epochs": 3.0})
    assert (cfg.privacy.secure, cfg.privacy.delta, cfg.model.max_length, cfg.train.epochs) == (
        True,
        None,
        64,
        3,
    )
    assert (
        cfg.config_hash()
        == RunConfig.from_flat({"secure": True, "delta": None, "max_length": 64, "epochs": 3}).config_hash()
    )
    # An empty YAML section (``train:``) is the defaults; a section that is not a mapping is an error.
    assert RunConfig.from_dict({"train": None}) == RunConfig()
    with pytest.raises(ValueError, match="config section 'train' must be a mapping"):
        RunConfig.from_dict({"train": ["lora"]})


def test_stored_hashes_do_not_move():
    # Hashes of results already stored: whole numbers for floats, YAML lists for tuples, text numbers.
    assert RunConfig().config_hash() == RunConfig.from_flat(RunConfig().to_flat()).config_hash()
    a = RunConfig.from_flat({"mode": "dp-lora", "epsilon": 10, "learning_rate": "1e-3", "lora_alpha": 16})
    b = RunConfig.from_flat({"mode": "dp-lora", "epsilon": 10.0, "learning_rate": 0.001, "lora_alpha": 16.0})
    assert a.config_hash() == b.config_hash()


def test_numpy_numbers_from_a_table_are_plain_numbers():
    import numpy as np

    cfg = RunConfig.from_flat({"epochs": np.int64(3), "mode": "dp-lora", "epsilon": np.int64(10)})
    assert type(cfg.train.epochs) is int and type(cfg.privacy.epsilon) is float
    assert (
        cfg.config_hash()
        == RunConfig.from_flat({"epochs": 3, "mode": "dp-lora", "epsilon": 10.0}).config_hash()
    )
