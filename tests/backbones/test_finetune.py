"""Fine-tuning from an initial model (`train --init`): the tiny Whisper (conftest) as an Echo folder,
a handful of pitched clips, the `whisper-base-pitch` preset's options at a test-sized budget."""

from __future__ import annotations

import json

from echoasr.training import resolve_config, train


def test_fine_tune_lowers_the_loss_and_resumes(initial_folder, pitched_clips, tmp_path):
    config = resolve_config("whisper-base-pitch", overrides=dict(
        init=str(initial_folder), max_steps=8, save_steps=4, eval_steps=8, logging_steps=1, warmup_steps=1,
        learning_rate=3e-3, added_learning_rate=3e-2, batch_frames=400, threads=1, bf16=False, dev_limit=2))
    run = tmp_path / "run"
    summary = train(pitched_clips, run, config, cache_dir=tmp_path / "cache", progress=False)
    losses = [entry["loss"] for entry in summary["log_history"] if "loss" in entry]
    assert summary["init"] == str(initial_folder) and summary["steps"] == 8
    assert losses[-1] < losses[0] - 0.3  # 5.60 -> 4.87 measured
    saved = json.loads((run / "config.json").read_text())
    assert saved["pitch_zero_start"] and saved["features"] == ["mel", "f0"] and saved["decoder_prompt_ids"]
    from safetensors.torch import load_file

    weights = load_file(run / "model.safetensors")
    assert weights["encoder.rotary.angle_scale"].abs().max() > 0  # the zero scales trained
    resumed = train(pitched_clips, run, resume=True, resume_overrides={"max_steps": 10}, cache_dir=tmp_path / "cache",
                    progress=False)
    assert resumed["steps"] == 10
    assert [e["step"] for e in resumed["log_history"] if "loss" in e][:8] == list(range(1, 9))  # continued, not restarted


def test_added_parameters_get_their_own_learning_rate(initial_folder):
    from echoasr.model import EchoForConditionalGeneration
    from echoasr.optim import build_optimizer
    from echoasr.training import InitialModel

    initial = InitialModel.load(str(initial_folder), resolve_config("whisper-base-pitch").model)
    model = EchoForConditionalGeneration(initial.config)
    added = {name for name, _ in model.named_parameters()} - initial.load_into(model)
    assert "encoder.rotary.angle_scale" in added and "encoder.stems.mel.convs.0.weight" not in added
    optimizer = build_optimizer("adamw", model, lr=1e-5, other_lr=(added, 1e-3))
    rates = {id(p): group["lr"] for group in optimizer.param_groups for p in group["params"]}
    assert rates[id(model.encoder.rotary.angle_scale)] == 1e-3
    assert rates[id(model.encoder.stems["mel"].convs[0].weight)] == 1e-5
    assert sum(len(g["params"]) for g in optimizer.param_groups) == len(list(model.parameters()))


def test_freezing_keeps_initial_weights_and_trains_the_added_ones(initial_folder):
    from echoasr.model import EchoForConditionalGeneration
    from echoasr.training import InitialModel, freeze_parts

    initial = InitialModel.load(str(initial_folder), resolve_config("whisper-base-pitch").model)
    model = EchoForConditionalGeneration(initial.config)
    loaded = initial.load_into(model)
    frozen = freeze_parts(model, ["encoder"], loaded)
    assert frozen == sum(p.numel() for n, p in model.named_parameters() if n.startswith("encoder.") and n in loaded)
    assert not model.encoder.layers[0].self_attn.qkv.weight.requires_grad
    assert model.encoder.rotary.angle_scale.requires_grad and model.encoder.stems["f0"].convs[0].weight.requires_grad
    assert model.decoder.layers[0].ffn.up.weight.requires_grad
