import pytest
import torch
from safetensors.torch import load_file, save_file

from echoasr import cli
from echoasr.averaging import average_run
from echoasr.data.mixture import mix_training_sets, parse_mix
from echoasr.data.records import Utterance
from echoasr.errors import EchoError
from echoasr.training import PRESETS, average_last_checkpoints, resolve_config


def write_checkpoints(run, steps, seed=0):
    generator = torch.Generator().manual_seed(seed)
    states = {}
    for step in steps:
        state = {"layer.weight": torch.randn(4, 3, generator=generator),
                 "layer.bias": torch.randn(4, generator=generator),
                 "position_ids": torch.arange(5) + step}
        (run / f"checkpoint-{step}").mkdir(parents=True)
        save_file(state, str(run / f"checkpoint-{step}" / "model.safetensors"))
        states[step] = state
    return states


def test_average_is_the_mean_of_the_last_checkpoints(tmp_path):
    states = write_checkpoints(tmp_path, [100, 1000, 200, 300])  # numeric order, not lexical
    target, chosen = average_run(tmp_path, 3)
    assert [p.name for p in chosen] == ["checkpoint-200", "checkpoint-300", "checkpoint-1000"]
    averaged = load_file(str(target))
    for name in ("layer.weight", "layer.bias"):
        expected = (states[200][name] + states[300][name] + states[1000][name]) / 3
        assert torch.allclose(averaged[name], expected, atol=1e-6)
    assert torch.equal(averaged["position_ids"], states[1000]["position_ids"])  # integers: the newest
    assert cli.main(["average", str(tmp_path), "--last", "2", "--out", str(tmp_path / "two.safetensors")]) == 0
    two = load_file(str(tmp_path / "two.safetensors"))
    assert torch.allclose(two["layer.weight"], (states[300]["layer.weight"] + states[1000]["layer.weight"]) / 2)
    with pytest.raises(EchoError, match="no checkpoint"):
        average_run(tmp_path / "empty", 2)


def test_training_option_loads_the_average_into_the_model(tmp_path):
    states = write_checkpoints(tmp_path, [10, 20, 30], seed=1)
    model = torch.nn.Module()
    model.layer = torch.nn.Linear(3, 4)
    model.register_buffer("position_ids", torch.zeros(5, dtype=torch.long))
    chosen = average_last_checkpoints(model, tmp_path, 2)
    assert [p.name for p in chosen] == ["checkpoint-20", "checkpoint-30"]
    assert torch.allclose(model.layer.weight, (states[20]["layer.weight"] + states[30]["layer.weight"]) / 2)
    assert average_last_checkpoints(model, tmp_path, 1) == []


def utterances(prefix, count, seconds):
    return [Utterance(f"{prefix}{i}", "text", duration=seconds, path=f"/{prefix}{i}.wav") for i in range(count)]


def test_mix_gives_each_folder_its_share_of_hours():
    synthetic, real = utterances("s", 300, 3.0), utterances("r", 40, 2.0)  # 900 s and 80 s
    mixed = mix_training_sets(synthetic, {"real": real}, {"real": 0.3}, seed=5)
    real_seconds = sum(u.duration for u in mixed if u.id.startswith("r"))
    total = sum(u.duration for u in mixed)
    assert 980 - 5.0 <= total <= 980 and abs(real_seconds / total - 0.3) < 0.01
    assert {u.id for u in mixed if u.id.startswith("r")} == {u.id for u in real}  # upsampled: every clip, repeated
    assert mixed == mix_training_sets(synthetic, {"real": real}, {"real": 0.3}, seed=5)
    assert mixed != mix_training_sets(synthetic, {"real": real}, {"real": 0.3}, seed=6)
    assert parse_mix("data/a:0.2,b:0.1") == {"data/a": 0.2, "b": 0.1}
    for bad in ("data/a", "a:0.7,b:0.4", "a:x"):
        with pytest.raises(EchoError):
            parse_mix(bad)


def test_recipe_preset_masks_and_averages():
    config = resolve_config("base-mix", overrides={"mix": {"data/real": 0.3}})
    assert config.spec_augment and config.spec_augment["time_masks"] > 0
    assert 1 < config.average_last <= config.save_total_limit and config.mix == {"data/real": 0.3}
    assert config.model == PRESETS["base"].model
    with pytest.raises(EchoError, match="average_last"):
        resolve_config("base-mix", overrides={"save_total_limit": 2})
