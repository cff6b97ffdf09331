"""Training end to end on real TTS speech: loss goes down, the run folder holds what evaluate and
transcribe need, resume is exact, bad rows are skipped, NaN stops cleanly."""

import json
import logging

import pytest
import yaml

from echoasr.cli import main
from echoasr.errors import EchoError

from .conftest import SENTENCES, tiny_config, write_manifest


def losses(summary):
    return {entry["step"]: entry["loss"] for entry in summary["log_history"] if "loss" in entry}


def test_training_lowers_the_loss_and_writes_a_complete_run(trained_run):
    run, summary = trained_run
    curve = losses(summary)
    assert summary["steps"] == 30 and len(curve) == 30
    first, last = sum(list(curve.values())[:3]) / 3, sum(list(curve.values())[-3:]) / 3
    assert last < 0.8 * first
    for folder in (run, run / "checkpoint-15", run / "checkpoint-30"):
        assert (folder / "model.safetensors").is_file() and (folder / "processor.json").is_file()
        assert (folder / "tokenizer" / "tokenizer_config.json").is_file()
    assert (run / "checkpoint-30" / "optimizer.pt").is_file()
    assert yaml.safe_load((run / "train_config.yaml").read_text())["max_steps"] == 30
    assert list((run / "logs").glob("events.out.tfevents.*"))
    assert json.loads((run / "train_summary.json").read_text())["steps"] == 30
    # evaluation during training decodes for real and reports WER/CER
    assert "dev" in summary and summary["dev"]["utterances"] == 2
    assert any("eval_wer" in entry and "eval_cer" in entry for entry in summary["log_history"])
    assert any("ctc_loss" in entry and "attention_loss" in entry for entry in summary["log_history"])


def test_dev_scores_during_training_equal_a_separate_evaluation(trained_run, tts_corpus, tmp_path):
    # The Trainer's dev WER/CER (predict_with_generate: the model's search, no hallucination
    # guard) must be what `evaluate` finds for the final model with the same search.
    from echoasr.evaluation import evaluate

    run, summary = trained_run
    beams = yaml.safe_load((run / "train_config.yaml").read_text())["eval_beams"]
    result = evaluate(run, tts_corpus / "dev.tsv", beams=beams, out=tmp_path / "dev.tsv", progress=False, guard=False)
    assert result["utterances"] == summary["dev"]["utterances"] == 2
    assert summary["dev"]["step"] == summary["steps"]
    assert summary["dev"]["cer"] == pytest.approx(result["cer"]) and summary["dev"]["wer"] == pytest.approx(result["wer"])


def test_existing_run_is_not_overwritten(trained_run, tts_corpus):
    from echoasr.training import train

    run, _ = trained_run
    with pytest.raises(EchoError, match="--resume"):
        train(tts_corpus, run, tiny_config(), progress=False)


def test_resume_matches_an_uninterrupted_run(tts_corpus, tmp_path, monkeypatch):
    """A run killed after its step-4 checkpoint and resumed ends like one that never stopped."""
    from transformers import TrainerCallback

    from echoasr import training

    config = tiny_config(max_steps=8, save_steps=4, eval_steps=100, dev_limit=None)
    cache = tmp_path / "cache"
    whole = training.train(tts_corpus, tmp_path / "whole", config, cache_dir=cache, progress=False)

    class Kill(TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):
            if state.global_step == 6:
                raise KeyboardInterrupt  # the process dies between checkpoints

    original = training._time_budget_callback
    monkeypatch.setattr(training, "_time_budget_callback", lambda minutes: Kill())
    with pytest.raises(KeyboardInterrupt):
        training.train(tts_corpus, tmp_path / "killed", config.merged({"max_minutes": 1000}), cache_dir=cache, progress=False)
    monkeypatch.setattr(training, "_time_budget_callback", original)
    assert (tmp_path / "killed" / "checkpoint-4").is_dir() and not (tmp_path / "killed" / "checkpoint-8").exists()
    # the checkpoint records the training time spent up to it; the resumed run's clock continues from there
    recorded = tmp_path / "killed" / "checkpoint-4" / "progress.json"
    assert json.loads(recorded.read_text())["step"] == 4 and json.loads(recorded.read_text())["seconds"] > 0
    recorded.write_text(json.dumps({**json.loads(recorded.read_text()), "seconds": 5000.0}))

    resumed = training.train(tts_corpus, tmp_path / "killed", resume=True, cache_dir=cache, progress=False)
    assert resumed["steps"] == whole["steps"] == 8
    assert 5000 < resumed["train_seconds"] < 5000 + 600
    assert json.loads((tmp_path / "killed" / "progress.json").read_text())["seconds"] > 5000
    a, b = losses(whole), losses(resumed)
    assert set(range(5, 9)) <= set(b)
    for step in range(5, 9):
        assert b[step] == pytest.approx(a[step], rel=1e-3, abs=1e-3)


def test_non_finite_loss_stops_with_the_step_and_keeps_the_last_checkpoint(tts_corpus, tmp_path, monkeypatch, capsys):
    import torch

    from echoasr.model import EchoForConditionalGeneration

    calls = {"n": 0}
    forward = EchoForConditionalGeneration.forward

    def poisoned(self, *args, **kwargs):
        out = forward(self, *args, **kwargs)
        if self.training:
            calls["n"] += 1
            if calls["n"] == 5 and out.loss is not None:
                out.loss = out.loss * torch.tensor(float("inf"))
        return out

    monkeypatch.setattr(EchoForConditionalGeneration, "forward", poisoned)
    config = tmp_path / "c.yaml"
    config.write_text(yaml.safe_dump({"preset": "tiny", "batch_frames": 1200, "save_steps": 2, "eval_steps": 100,
                                      "max_steps": 10, "threads": 1}))
    status = main(["train", "--config", str(config), "--data", str(tts_corpus), "--out", str(tmp_path / "run"),
                   "--cache-dir", str(tmp_path / "cache")])
    err = capsys.readouterr().err.strip().splitlines()
    assert status == 2
    assert err[-1].startswith("echoasr: error: ") and "at step 5" in err[-1] and "checkpoint-4" in err[-1]
    assert (tmp_path / "run" / "checkpoint-4" / "model.safetensors").is_file()
    assert not (tmp_path / "run" / "model.safetensors").exists()


def test_bad_rows_are_skipped_with_a_summary(tts_corpus, tmp_path, caplog):
    from echoasr.training import train

    (tmp_path / "empty.wav").write_bytes(b"")
    (tmp_path / "text.wav").write_text("not audio")
    rows = [(str(tts_corpus / "wav" / f"u{i}.wav"), SENTENCES[i]) for i in range(6)]
    rows += [("missing.wav", "a missing file"), (str(tmp_path / "empty.wav"), "an empty file"),
             (str(tmp_path / "text.wav"), "not audio"), (str(tts_corpus / "wav" / "u6.wav"), "  ")]
    manifest = write_manifest(tmp_path / "train.tsv", rows)
    with caplog.at_level(logging.WARNING):
        summary = train(manifest, tmp_path / "run", tiny_config(max_steps=2, save_steps=2), cache_dir=tmp_path / "c",
                        progress=False)
    assert summary["train_utterances"] == 6 and summary["steps"] == 2 and "dev" not in summary
    assert any("6 of 10 utterances usable" in record.getMessage() for record in caplog.records)


def test_manifest_without_usable_rows_is_an_error(tmp_path, capsys):
    manifest = write_manifest(tmp_path / "train.tsv", [("missing.wav", "hello there")])
    status = main(["train", "--preset", "tiny", "--data", str(manifest), "--out", str(tmp_path / "run")])
    err = capsys.readouterr().err
    assert status == 2 and "train.tsv" in err and "no usable utterances" in err
    assert not (tmp_path / "run").exists()
