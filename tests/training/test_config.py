import pytest
import yaml

from echoasr.errors import EchoError
from echoasr.training import PRESETS, TrainConfig, register_preset, resolve_config


def test_presets_build_valid_models():
    from echoasr.model import EchoConfig

    assert {"tiny", "small", "base", "small-plain", "base-plain"} <= set(PRESETS)
    for name, preset in PRESETS.items():
        config = EchoConfig(vocab_size=preset.vocab_size, **preset.model)
        assert config.d_model > 0, name
    assert EchoConfig(**PRESETS["small"].model).uses_pitch
    assert not EchoConfig(**PRESETS["small-plain"].model).uses_pitch
    assert PRESETS["small-plain"].model["d_model"] == PRESETS["small"].model["d_model"]


def test_yaml_overrides_preset_and_merges_model(tmp_path):
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump({"preset": "tiny", "learning_rate": 0.01, "model": {"d_model": 32}}))
    config = resolve_config(config_file=path, overrides={"max_steps": 7, "seed": None})
    assert config.learning_rate == 0.01 and config.max_steps == 7
    assert config.model["d_model"] == 32 and config.model["encoder_layers"] == PRESETS["tiny"].model["encoder_layers"]
    assert config.seed == PRESETS["tiny"].seed  # None means "not given"


def test_saved_config_round_trips(tmp_path):
    config = resolve_config("tiny")
    path = tmp_path / "train_config.yaml"
    path.write_text(yaml.safe_dump(config.to_dict()))
    assert TrainConfig.from_dict(yaml.safe_load(path.read_text())) == config
    assert resolve_config(config_file=path, overrides={}) == config  # a saved config works as --config


@pytest.mark.parametrize("content, message", [
    ({"learnig_rate": 1.0}, "unknown option"),
    ({"preset": "huge"}, "unknown preset"),
    ({"optimizer": "sgd"}, "optimizer must be"),
    ("- a list", "mapping"),
])
def test_bad_configs_are_user_errors(tmp_path, content, message):
    path = tmp_path / "bad.yaml"
    path.write_text(content if isinstance(content, str) else yaml.safe_dump(content))
    with pytest.raises(EchoError, match=message):
        resolve_config(config_file=path)


def test_conflicting_presets_are_refused(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("preset: tiny\n")
    with pytest.raises(EchoError, match="contradicts"):
        resolve_config("small", path)


def test_registered_preset_is_usable():
    register_preset("unit-test", PRESETS["tiny"].merged({"optimizer": "maxfactor"}))
    try:
        assert resolve_config("unit-test").optimizer == "maxfactor"
    finally:
        del PRESETS["unit-test"]


def test_yaml_numbers_are_coerced_and_types_checked(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("learning_rate: 3e-3\nmax_steps: 12\nspec_augment: null\n")  # YAML 1.1 reads 3e-3 as a string
    config = resolve_config("tiny", path)
    assert config.learning_rate == 0.003 and config.max_steps == 12 and config.spec_augment is None
    for text, message in [("max_steps: ten\n", "must be a number"), ("max_steps: 2.5\n", "must be int"),
                          ("model: 3\n", "must be dict"), ("model: {subsampling: 3}\n", "subsampling")]:
        path.write_text(text)
        with pytest.raises(EchoError, match=message):
            resolve_config("tiny", path)


def test_changing_the_optimizer_drops_the_presets_optimizer_options():
    assert resolve_config("small").optimizer_options == {"betas": [0.9, 0.98]}
    assert resolve_config("small", overrides={"optimizer": "maxfactor"}).optimizer_options == {}
    assert resolve_config("seed").optimizer == "maxfactor" and resolve_config("seed").optimizer_options == {}
    kept = resolve_config("small", overrides={"optimizer": "adamw", "optimizer_options": {"eps": 1e-6}})
    assert kept.optimizer_options == {"betas": [0.9, 0.98], "eps": 1e-6}
