"""A tiny Whisper for the backbone tests: a byte-level BPE tokenizer with Whisper's special
tokens, a randomly initialised `transformers` Whisper of that vocabulary, and its CTranslate2 file
written by CTranslate2's own converter (so the reader is checked against the real writer)."""

from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile
import torch

from echoasr.backbones import whisper

SPECIALS = ["<|endoftext|>", "<|startoftranscript|>", "<|en|>", "<|transcribe|>", "<|startoflm|>", "<|notimestamps|>"]
MERGES = ["Ġ t", "h e", "Ġt he"]  # ranks 0-2 create ids 256-258
TEXTS = ["the the", "he the", "the he he", "he", "the he"]


def tiny_tokenizer_json(merges: list[str] = MERGES) -> str:
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers

    alphabet = pre_tokenizers.ByteLevel.alphabet()
    vocab = {symbol: index for index, symbol in enumerate(sorted(alphabet))}
    for merge in MERGES:
        vocab["".join(merge.split())] = len(vocab)
    bpe = models.BPE(vocab=vocab, merges=[tuple(m.split()) for m in merges])
    tokenizer = Tokenizer(bpe)
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    tokenizer.add_special_tokens(SPECIALS)
    return tokenizer.to_str()


@pytest.fixture(scope="session")
def tiny_whisper(tmp_path_factory):
    """(transformers Whisper in eval mode, CTranslate2 folder, tokenizer.json text, ct2 config)."""
    from ctranslate2.converters.transformers import WhisperLoader
    from transformers import WhisperConfig, WhisperForConditionalGeneration

    from echoasr.text import WhisperTokenizer

    tokenizer_json = tiny_tokenizer_json()
    tokenizer = WhisperTokenizer(tokenizer_json)
    torch.manual_seed(0)
    config = WhisperConfig(
        vocab_size=tokenizer.vocab_size, d_model=32, encoder_layers=2, decoder_layers=2, encoder_attention_heads=4,
        decoder_attention_heads=4, encoder_ffn_dim=64, decoder_ffn_dim=64, num_mel_bins=80, max_source_positions=30,
        max_target_positions=24, pad_token_id=tokenizer.eos_id, bos_token_id=tokenizer.eos_id,
        eos_token_id=tokenizer.eos_id, decoder_start_token_id=tokenizer.bos_id,
    )
    model = WhisperForConditionalGeneration(config).eval()
    with torch.no_grad():  # random biases and norm gains, so that a dropped or misplaced one shows
        for name, parameter in model.named_parameters():
            if name.endswith("bias") and "k_proj" not in name:
                parameter.normal_(0.0, 0.1)
            elif "layer_norm.weight" in name:
                parameter.uniform_(0.5, 1.5)
    spec = WhisperLoader().get_model_spec(model)
    spec.register_vocabulary([tokenizer._tokenizer.id_to_token(i) for i in range(tokenizer.vocab_size)])
    spec.validate()
    spec.optimize()  # float32, as the transformers model
    folder = tmp_path_factory.mktemp("ct2-tiny")
    spec.save(str(folder))
    ct2_config = {"suppress_ids": [7], "suppress_ids_begin": [220, tokenizer.eos_id]}
    return model, folder, tokenizer_json, ct2_config


def fake_wheels(tmp_path: Path, monkeypatch, folder: Path, tokenizer_json: str, ct2_config: dict):
    """Two importable packages carrying the tiny model cut in two, registered as backbone 'tiny'."""
    data = (folder / "model.bin").read_bytes()
    names = ("tinywhisper_part1", "tinywhisper_part2")
    for index, (name, part) in enumerate(zip(names, (data[:1000], data[1000:])), start=1):
        package = tmp_path / "site" / name
        (package / "data").mkdir(parents=True)
        (package / "__init__.py").write_text("")
        (package / "data" / f"model.bin.part{index}").write_bytes(part)
    (tmp_path / "site" / names[0] / "data" / "tokenizer.json").write_text(tokenizer_json)
    (tmp_path / "site" / names[0] / "data" / "config.json").write_text(json.dumps(ct2_config))
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    for name in names:  # an earlier test imported packages of these names from its own folder
        monkeypatch.delitem(sys.modules, name, raising=False)
    source = whisper.PackagedWhisper("tiny", names, hashlib.sha256(data).hexdigest(), len(data))
    monkeypatch.setitem(whisper.BACKBONES, "tiny", source)
    return tmp_path / "site" / names[1] / "data" / "model.bin.part2"


def write_pitched_clips(folder: Path) -> Path:
    """Five 0.5 s vowel-like tones (harmonics of 110-220 Hz) with a train/dev manifest in ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    rows = ["path\ttext\tspeaker"]
    t = np.arange(8000) / 16000
    for index, text in enumerate(TEXTS):
        f0 = 110.0 + 27.5 * index
        audio = sum(np.sin(2 * np.pi * f0 * k * t) / k for k in range(1, 6)).astype(np.float32) * 0.2
        soundfile.write(folder / f"clip{index}.wav", audio, 16000)
        rows.append(f"clip{index}.wav\t{text}\ts{index}")
    (folder / "train.tsv").write_text("\n".join(rows) + "\n")
    (folder / "dev.tsv").write_text("\n".join(rows[:3]) + "\n")
    return folder


@pytest.fixture()
def pitched_clips(tmp_path):
    return write_pitched_clips(tmp_path)


@pytest.fixture()
def initial_folder(tiny_whisper, tmp_path):
    """The tiny Whisper converted to an Echo model folder (what `backbone_dir` writes, without the wheels)."""
    from echoasr.backbones.ctranslate2 import read_model
    from echoasr.features import FeatureSettings
    from echoasr.processor import SpeechProcessor

    _, folder, tokenizer_json, ct2_config = tiny_whisper
    model, tokenizer = whisper.convert(read_model(folder / "model.bin"), tokenizer_json, ct2_config)
    target = tmp_path / "initial"
    model.save_pretrained(target)
    SpeechProcessor(tokenizer, ("mel",), FeatureSettings(), 0.6).save_pretrained(target)
    return target
