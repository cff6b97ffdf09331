"""A saved model folder is complete and loads through transformers' Auto classes; ``--int8``
loads it quantised and decodes with it."""

import json

import numpy as np
import pytest
import soundfile
import torch

from echoasr.audio import SAMPLE_RATE
from echoasr.cli import main
from echoasr.model import EchoConfig, EchoForConditionalGeneration
from echoasr.loading import load_pretrained
from echoasr.processor import SpeechProcessor
from echoasr.text.tokenizers import BASE_ALPHABET, CharTokenizer


@pytest.fixture
def model_folder(tmp_path):
    """A tiny untrained mel + f0 model with its processor, saved the way training saves one."""
    torch.manual_seed(0)
    tokenizer = CharTokenizer(sorted(BASE_ALPHABET))
    config = EchoConfig(vocab_size=tokenizer.vocab_size, d_model=32, encoder_layers=1, decoder_layers=1,
                        attention_heads=4, ffn_dim=64, features=["mel", "f0"], rotary_theta_mode="phase",
                        max_target_positions=16)
    model = EchoForConditionalGeneration(config).eval()
    processor = SpeechProcessor(tokenizer, ("mel", "f0"), max_duration=4.0)
    folder = tmp_path / "model"
    model.save_pretrained(folder)
    processor.save_pretrained(folder)
    return folder, model, processor


def tone(seconds: float = 1.5) -> np.ndarray:
    t = np.arange(int(seconds * SAMPLE_RATE)) / SAMPLE_RATE
    return (0.3 * np.sin(2 * np.pi * 150 * t) * (1 + np.sin(2 * np.pi * 3 * t))).astype(np.float32)


def test_saved_folder_is_complete_and_loads_through_the_auto_classes(model_folder):
    from transformers import AutoConfig, AutoModelForSpeechSeq2Seq, AutoProcessor

    folder, model, processor = model_folder
    for name in ("config.json", "model.safetensors", "generation_config.json", "processor.json", "tokenizer"):
        assert (folder / name).exists(), name
    assert isinstance(AutoConfig.from_pretrained(folder), EchoConfig)
    loaded = AutoModelForSpeechSeq2Seq.from_pretrained(folder).eval()
    assert type(loaded) is EchoForConditionalGeneration
    auto_processor = AutoProcessor.from_pretrained(folder)
    assert isinstance(auto_processor, SpeechProcessor)
    assert auto_processor.features == processor.features and auto_processor.max_duration == 4.0
    batch = auto_processor.collator()([{"features": auto_processor.extract(tone())}])
    with torch.inference_mode():
        expected = model(features=batch["features"], feature_lengths=batch["feature_lengths"],
                         decoder_input_ids=torch.tensor([[1, 5, 6]]))
        actual = loaded(features=batch["features"], feature_lengths=batch["feature_lengths"],
                        decoder_input_ids=torch.tensor([[1, 5, 6]]))
        torch.testing.assert_close(actual.logits, expected.logits)
        torch.testing.assert_close(loaded.generate(features=batch["features"], num_beams=2),
                                   model.generate(features=batch["features"], num_beams=2))


def test_int8_loading_quantises_the_linear_layers(model_folder):
    folder, _, _ = model_folder
    model, _ = load_pretrained(folder, int8=True)
    assert not any(type(m) is torch.nn.Linear for m in model.modules())
    assert any(isinstance(m, torch.ao.nn.quantized.dynamic.Linear) for m in model.modules())


def test_transcribe_and_evaluate_with_int8(model_folder, tmp_path, capsys):
    folder, _, _ = model_folder
    audio = tmp_path / "tone.wav"
    soundfile.write(audio, tone(), SAMPLE_RATE)
    assert main(["transcribe", "--model", str(folder), "--int8", "--beam", "2", str(audio)]) == 0
    assert capsys.readouterr().out.startswith(f"{audio}\t")
    manifest = tmp_path / "test.tsv"
    manifest.write_text(f"path\ttext\n{audio}\thello\n")
    assert main(["evaluate", "--model", str(folder), "--int8", "--beam", "2", "--data", str(manifest), "--json"]) == 0
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert result["int8"] is True and result["utterances"] == 1


def test_int8_with_bf16_is_a_one_line_error(model_folder, tmp_path, capsys):
    folder, _, _ = model_folder
    audio = tmp_path / "tone.wav"
    soundfile.write(audio, tone(), SAMPLE_RATE)
    assert main(["transcribe", "--model", str(folder), "--int8", "--bf16", str(audio)]) == 2
    assert "--int8 and --bf16" in capsys.readouterr().err
