"""A word LM on a model the CTC word search cannot serve (the tiny Whisper of conftest: no CTC head,
byte-level BPE): n-best rescoring of the attention beam search, its tuning, its refusals.

The tiny model is random, so the expected outcomes are built from its own n-best: an LM written
for the hypothesis the search ranks last must bring that one to the top."""

from __future__ import annotations

import importlib.util
import json
import math
from pathlib import Path

import pytest
import torch

from echoasr.audio import load_audio
from echoasr.cli import main
from echoasr.decoding import DecodingOptions, SpeechDecoder, resolve_options
from echoasr.errors import EchoError
from echoasr.loading import load_pretrained
from echoasr.text import normalize

pytestmark = pytest.mark.skipif(importlib.util.find_spec("kenlm") is None, reason="kenlm (the independent scorer)")

BEAMS = 4
DEV_CLIPS = 3


def favouring_lm(path, sentence: str):
    """A bigram ARPA under which ``sentence`` (normalised) is likely and any other word sequence
    is not: its bigrams cost 0.01 (log10), a unigram 3, an unknown word 20; no back-off weight."""
    words = sentence.split()
    unigrams = ["-99\t<s>\t0", "-3\t</s>", "-20\t<unk>"] + [f"-3\t{w}\t0" for w in sorted(set(words))]
    chain = ["<s>", *words, "</s>"]
    bigrams = sorted({f"-0.01\t{a} {b}" for a, b in zip(chain, chain[1:])})
    lines = ["\\data\\", f"ngram 1={len(unigrams)}", f"ngram 2={len(bigrams)}", "", "\\1-grams:", *unigrams, "",
             "\\2-grams:", *bigrams, "", "\\end\\", ""]
    path.write_text("\n".join(lines))
    return path


def log10_lm(sentence: str, path) -> float:
    import kenlm

    return kenlm.Model(str(path)).score(sentence, bos=True, eos=True)


def decode_clip(model, processor, clip, options: DecodingOptions):
    batch = processor.collator()([{"features": processor.extract(load_audio(clip))}])
    decoder = SpeechDecoder(model, processor, options)
    with torch.inference_mode():
        return decoder.decode_batch(batch["features"], batch["feature_lengths"])[0]


@pytest.fixture
def whisper_model(initial_folder):
    model, processor = load_pretrained(initial_folder)
    assert model.ctc_head is None and processor.tokenizer.kind == "whisper"
    return model, processor


@pytest.fixture
def last_ranked(whisper_model, pitched_clips, tmp_path):
    """The normalised text of the hypothesis the search ranks last for clip 0, and an LM favouring it."""
    model, processor = whisper_model
    neutral = favouring_lm(tmp_path / "neutral.arpa", "the")
    transcript = decode_clip(model, processor, pitched_clips / "clip0.wav",
                             DecodingOptions(beams=BEAMS, lm=str(neutral), lm_weight=0.0, word_bonus=0.0))
    assert len(transcript.candidates) == BEAMS
    target = normalize(transcript.candidates[-1].text)
    assert target and target != normalize(transcript.candidates[0].text)  # the LM has something to change
    return target, favouring_lm(tmp_path / "favouring.arpa", target)


def test_without_lm_weights_the_choice_is_the_beam_search_1_best(whisper_model, pitched_clips, tmp_path):
    model, processor = whisper_model
    lm = favouring_lm(tmp_path / "lm.arpa", "he the")
    for index in range(DEV_CLIPS):
        clip = pitched_clips / f"clip{index}.wav"
        plain = decode_clip(model, processor, clip, DecodingOptions(beams=BEAMS))
        rescored = decode_clip(model, processor, clip,
                               DecodingOptions(beams=BEAMS, lm=str(lm), lm_weight=0.0, word_bonus=0.0))
        assert rescored.text == plain.text
        assert len(rescored.nbest) == BEAMS and rescored.nbest[0][0] == plain.text


def test_a_heavy_lm_picks_the_hypothesis_it_prefers(whisper_model, pitched_clips, last_ranked):
    model, processor = whisper_model
    target, lm = last_ranked
    clip = pitched_clips / "clip0.wav"
    heavy = decode_clip(model, processor, clip, DecodingOptions(beams=BEAMS, lm=str(lm), lm_weight=5.0))
    assert normalize(heavy.text) == target

    # Scores against an independent computation: teacher-forced attention log-probabilities, the
    # ARPA through kenlm, natural logs, the search's length normalisation (penalty 1).
    from echoasr.model.rescoring import sequence_log_probs

    lm_weight, word_bonus = 0.7, 0.3
    rescored = decode_clip(model, processor, clip, DecodingOptions(beams=BEAMS, lm=str(lm), lm_weight=lm_weight,
                                                                   word_bonus=word_bonus))
    batch = processor.collator()([{"features": processor.extract(load_audio(clip))}])
    eos, pad = model.config.eos_token_id, model.config.pad_token_id
    with torch.inference_mode():
        encoder = model.encode(batch["features"], batch["feature_lengths"])
        nbest = model.generate(encoder_outputs=encoder, num_beams=BEAMS, nbest=BEAMS)
        sequences = [[t for t in row if t not in (eos, pad)] for row in nbest.sequences[0].tolist()]
        attention = sequence_log_probs(model, encoder, sequences, [0] * BEAMS).tolist()
    expected = {}
    for ids, log_p in zip(sequences, attention, strict=True):
        text = " ".join(processor.decode(ids).split())
        words = normalize(text)
        lm_ln = math.log(10) * log10_lm(words, lm)
        expected[text] = (log_p + lm_weight * lm_ln + word_bonus * len(words.split())) / (len(ids) + 1)
    assert {text for text, _ in rescored.nbest} == set(expected)
    for text, score in rescored.nbest:
        assert score == pytest.approx(expected[text], abs=1e-3)
    assert rescored.text == max(expected, key=expected.get)


def test_lm_tune_saves_weights_that_transcribe_then_uses(initial_folder, pitched_clips, last_ranked, capsys):
    target, lm = last_ranked
    dev = pitched_clips / "rescoring-dev.tsv"
    rows = ["path\ttext\tspeaker"] + [f"clip0.wav\t{target}\ts0"]  # clip 0 only: its n-best was looked at
    dev.write_text("\n".join(rows) + "\n")
    assert main(["lm", "tune", "--model", str(initial_folder), "--data", str(dev), "--lm", str(lm)]) == 0
    printed = capsys.readouterr().out
    result = json.loads(printed.strip().splitlines()[-1])
    saved = json.loads((initial_folder / "lm.json").read_text())
    assert (saved["lm_weight"], saved["word_bonus"]) == (result["lm_weight"], result["word_bonus"]) != (0.0, 0.0)
    assert saved["search"] == "attention n-best rescoring" and "rescore_weight" not in saved
    assert saved["dev_wer"] == 0.0 == min(point["wer"] for point in saved["grid"])
    no_lm = next(p for p in saved["grid"] if p["lm_weight"] == 0.0 and p["word_bonus"] == 0.0)
    assert no_lm["wer"] > 0  # the search alone gets it wrong
    options = resolve_options(initial_folder, None)
    assert Path(options.lm).resolve() == lm.resolve() and options.lm_weight == saved["lm_weight"]

    from echoasr.transcribe import transcribe_detailed

    (_, transcript, _), = transcribe_detailed(initial_folder, [pitched_clips / "clip0.wav"], beams=8, progress=False)
    assert normalize(transcript.text) == target
    (_, plain, _), = transcribe_detailed(initial_folder, [pitched_clips / "clip0.wav"], beams=8, lm="none",
                                         progress=False)
    assert normalize(plain.text) != target


def test_refusals_are_one_line(whisper_model, initial_folder, pitched_clips, tmp_path, capsys):
    model, processor = whisper_model
    characters = tmp_path / "chars.arpa"
    characters.write_text("\\data\\\nngram 1=5\nngram 2=1\n\n\\1-grams:\n-1\t<s>\t0\n-0.5\t</s>\n-2\t<unk>\n"
                          "-0.5\ta\t0\n-0.5\t|\t0\n\n\\2-grams:\n-0.1\ta |\n\n\\end\\\n")
    assert main(["transcribe", "--model", str(initial_folder), str(pitched_clips / "clip0.wav"),
                 "--lm", str(characters)]) == 2
    error = capsys.readouterr().err.strip()
    assert "character LM" in error and "\n" not in error
    words = favouring_lm(tmp_path / "w.arpa", "the")
    assert main(["transcribe", "--model", str(initial_folder), str(pitched_clips / "clip0.wav"), "--lm", str(words),
                 "--beam", "2", "--nbest", "3"]) == 2
    error = capsys.readouterr().err.strip()
    assert "n-best to rescore must be between 1 and the beams (2), not 3" in error and "\n" not in error
    # the CTC word search itself still refuses a BPE tokenizer
    from echoasr.lm.decoding import make_decoder

    with pytest.raises(EchoError, match="knows character and SentencePiece tokenizers"):
        make_decoder(words, processor.tokenizer)
