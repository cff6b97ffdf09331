"""MaxFactor (`optimizer: maxfactor`, `echoasr train --optimizer maxfactor`) on the tiny ASR task:
it lowers the loss, its factored state is what the checkpoints hold (smaller than AdamW's), and a
run killed between checkpoints resumes like one that never stopped."""

import pytest
import torch

from .conftest import tiny_config


def losses(summary):
    return {entry["step"]: entry["loss"] for entry in summary["log_history"] if "loss" in entry}


def test_maxfactor_lowers_the_tiny_asr_loss_and_checkpoints_its_state(tts_corpus, trained_run, tmp_path):
    from echoasr.training import train

    run = tmp_path / "maxfactor"
    summary = train(tts_corpus, run, tiny_config(optimizer="maxfactor", learning_rate=1e-2), cache_dir=tmp_path / "cache", progress=False)
    curve = list(losses(summary).values())
    assert len(curve) == 30 and sum(curve[-3:]) / 3 < 0.8 * sum(curve[:3]) / 3

    def state_bytes(folder):
        saved = torch.load(folder / "optimizer.pt", weights_only=True)
        return saved, sum(v.numel() * v.element_size() for s in saved["state"].values() for v in s.values() if torch.is_tensor(v))

    saved, maxfactor_bytes = state_bytes(run / "checkpoint-30")
    assert any("row_var" in s for s in saved["state"].values())  # factored moments of the matrices
    adamw_run, _ = trained_run  # the same tiny model trained with AdamW
    _, adamw_bytes = state_bytes(adamw_run / "checkpoint-30")
    assert maxfactor_bytes < 0.25 * adamw_bytes


def test_maxfactor_resume_matches_an_uninterrupted_run(tts_corpus, tmp_path, monkeypatch):
    from transformers import TrainerCallback

    from echoasr import training

    config = tiny_config(optimizer="maxfactor", learning_rate=1e-2, max_steps=8, save_steps=4, eval_steps=100, dev_limit=None)
    cache = tmp_path / "cache"
    whole = training.train(tts_corpus, tmp_path / "whole", config, cache_dir=cache, progress=False)

    class Kill(TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):
            if state.global_step == 6:
                raise KeyboardInterrupt

    original = training._time_budget_callback
    monkeypatch.setattr(training, "_time_budget_callback", lambda minutes: Kill())
    with pytest.raises(KeyboardInterrupt):
        training.train(tts_corpus, tmp_path / "killed", config.merged({"max_minutes": 1000}), cache_dir=cache, progress=False)
    monkeypatch.setattr(training, "_time_budget_callback", original)

    resumed = training.train(tts_corpus, tmp_path / "killed", resume=True, cache_dir=cache, progress=False)
    assert resumed["steps"] == whole["steps"] == 8
    a, b = losses(whole), losses(resumed)
    for step in range(5, 9):
        assert b[step] == pytest.approx(a[step], rel=1e-3, abs=1e-3)


def test_seed_preset_trains_end_to_end(tts_corpus, tmp_path):
    """`--preset seed` resolves to the original design with MaxFactor and trains (sizes shrunk)."""
    from echoasr.training import resolve_config, train

    config = resolve_config("seed", overrides=dict(max_steps=4, save_steps=4, eval_steps=4, logging_steps=1, batch_frames=1200,
                                                   threads=1, warmup_steps=1, dev_limit=2, tokenizer="char",
                                                   model=dict(d_model=32, ffn_dim=64, feature_layers=1, decoder_layers=1, modal_layers=1)))
    assert config.optimizer == "maxfactor"
    assert config.model["residual_gate"] == "t_gate" and config.model["decoder_layout"] == "blended"
    summary = train(tts_corpus, tmp_path / "seed", config, cache_dir=tmp_path / "cache", progress=False)
    assert summary["steps"] == 4 and all(map(lambda x: x == x, losses(summary).values()))
