"""The hallucination guard (silence, white noise, a tone), the CTC length bound, attention
rescoring scores, and the output formats."""

import json
import math
import re

import numpy as np
import pytest
import torch

from echoasr.audio import SAMPLE_RATE
from echoasr.decoding import DecodingOptions, SpeechDecoder, Transcript
from echoasr.formats import cues, render, timestamp
from echoasr.lm.decoding import Word
from echoasr.model import EchoConfig, EchoForConditionalGeneration
from echoasr.model.rescoring import ctc_speech_evidence, sequence_log_probs, token_limits
from echoasr.processor import SpeechProcessor
from echoasr.text.tokenizers import BASE_ALPHABET, EOS_ID, PAD_ID, CharTokenizer


def sounds():
    rng = np.random.default_rng(0)
    seconds = np.arange(2 * SAMPLE_RATE) / SAMPLE_RATE
    return {
        "silence": np.zeros(2 * SAMPLE_RATE, dtype=np.float32),
        "white noise": (0.1 * rng.standard_normal(2 * SAMPLE_RATE)).astype(np.float32),
        "tone": (0.3 * np.sin(2 * np.pi * 440 * seconds)).astype(np.float32),
    }


@pytest.fixture
def babbler():
    """A tiny model whose CTC head always says blank (it hears no speech) and whose attention
    decoder never ends: left alone, the decoder writes text for any input."""
    torch.manual_seed(0)
    tokenizer = CharTokenizer(sorted(BASE_ALPHABET))
    config = EchoConfig(vocab_size=tokenizer.vocab_size, d_model=32, encoder_layers=1, decoder_layers=1,
                        attention_heads=4, ffn_dim=64, dropout=0.0, n_mels=80, subsampling=4, ctc_weight=0.3)
    model = EchoForConditionalGeneration(config).eval()
    with torch.no_grad():
        model.ctc_head.weight.zero_()
        model.ctc_head.bias.fill_(-10.0)
        model.ctc_head.bias[PAD_ID] = 10.0
    original = model.decoder.logits
    never_end = torch.zeros(tokenizer.vocab_size)
    never_end[EOS_ID] = -1e4
    model.decoder.logits = lambda hidden: original(hidden) + never_end
    return model, SpeechProcessor(tokenizer, ("mel",))


def decode(model, processor, audio, **options):
    features = processor.collator()([{"features": processor.extract(audio)}])
    decoder = SpeechDecoder(model, processor, DecodingOptions(beams=2, ctc_weight=0.0, **options))
    with torch.inference_mode():
        return decoder.decode_batch(features["features"], features["feature_lengths"])[0]


@pytest.mark.parametrize("name", ["silence", "white noise", "tone"])
def test_non_speech_gives_empty_output(babbler, name):
    model, processor = babbler
    audio = sounds()[name]
    unguarded = decode(model, processor, audio, guard=False)
    assert len(unguarded.text) > 5  # the mechanism under test matters: the decoder babbles
    guarded = decode(model, processor, audio)
    assert guarded.text == "" and guarded.words == []


def test_output_length_is_bounded_by_the_ctc_best_path(babbler, monkeypatch):
    model, processor = babbler
    real = model.ctc_log_probs

    def two_tokens(encoder):  # the CTC head hears "ab" at the start
        log_probs = real(encoder).clone()
        for frame, token in ((1, 5), (3, 6)):
            log_probs[:, frame, token], log_probs[:, frame, PAD_ID] = 0.0, -20.0
        return log_probs

    monkeypatch.setattr(model, "ctc_log_probs", two_tokens)
    audio = sounds()["tone"]
    unguarded = decode(model, processor, audio, guard=False)
    guarded = decode(model, processor, audio)
    limit = int(token_limits(torch.tensor([2]))[0]) - 1  # tokens besides EOS
    assert limit == 7
    assert len(guarded.text) == limit < len(unguarded.text)


def test_speech_evidence_and_limits():
    log_probs = torch.full((2, 5, 4), -20.0)
    log_probs[:, :, 0] = 0.0
    log_probs[1, 2, 3], log_probs[1, 2, 0] = 0.0, -20.0  # one token in the second utterance
    tokens, blank_mass = ctc_speech_evidence(log_probs, torch.tensor([5, 3]), blank=0)
    assert tokens.tolist() == [0, 1]
    assert blank_mass[0] == pytest.approx(1.0) and blank_mass[1] == pytest.approx(2 / 3, abs=1e-6)
    assert token_limits(torch.tensor([0, 10])).tolist() == [5, 20]


def test_sequence_log_probs_match_step_by_step_scores(babbler):
    """Teacher-forced scores of padded hypotheses equal the sum of per-step decoder log-probs."""
    model, processor = babbler
    features = processor.collator()([{"features": processor.extract(sounds()["tone"])}])
    sequences = [[5, 6, 7], [8]]
    with torch.inference_mode():
        encoder = model.encode(features["features"], features["feature_lengths"])
        batched = sequence_log_probs(model, encoder, sequences, [0, 0])
        for sequence, score in zip(sequences, batched.tolist()):
            total, prefix = 0.0, [model.config.decoder_start_token_id]
            for token in [*sequence, EOS_ID]:
                hidden = model.decoder(torch.tensor([prefix]), encoder)[:, -1]
                total += torch.log_softmax(model.decoder.logits(hidden).float(), -1)[0, token].item()
                prefix.append(token)
            assert score == pytest.approx(total, rel=1e-6)


def transcript():
    words = [Word("hello", 0.12, 0.48, 0.91), Word("world", 0.56, 0.96, 0.8),
             Word("again", 2.5, 2.9, 0.7)]  # a pause: a new cue
    return Transcript("hello world again", words, [("hello world again", -3.5), ("hello word again", -4.25)])


def test_timestamps():
    assert timestamp(3723.4567, ",") == "01:02:03,457"
    assert timestamp(0.04, ".") == "00:00:00.040"


def test_srt_format():
    text = render("srt", "a.wav", transcript())
    blocks = text.strip().split("\n\n")
    assert blocks == ["1\n00:00:00,120 --> 00:00:00,960\nhello world", "2\n00:00:02,500 --> 00:00:02,900\nagain"]


def test_vtt_format():
    text = render("vtt", "a.wav", transcript())
    assert text.startswith("WEBVTT\n\n")
    cue_lines = [line for line in text.splitlines() if "-->" in line]
    assert cue_lines == ["00:00:00.120 --> 00:00:00.960", "00:00:02.500 --> 00:00:02.900"]
    assert all(re.fullmatch(r"\d\d:\d\d:\d\d\.\d{3} --> \d\d:\d\d:\d\d\.\d{3}", line) for line in cue_lines)


def test_json_format():
    document = json.loads(render("json", "a.wav", transcript(), duration=3.0))
    assert document["path"] == "a.wav" and document["text"] == "hello world again" and document["duration"] == 3.0
    assert document["words"][0] == {"word": "hello", "start": 0.12, "end": 0.48, "confidence": 0.91}
    assert [n["score"] for n in document["nbest"]] == [-3.5, -4.25]


def test_text_format_and_long_cues():
    assert render("text", "a.wav", transcript()) == "a.wav\thello world again\n"
    words = [Word(f"word{i}", i * 0.5, i * 0.5 + 0.4, 1.0) for i in range(30)]
    for start, end, text in cues(words):
        assert len(text) <= 42 and end - start <= 5.0 + 1e-9
    assert " ".join(text for _, _, text in cues(words)) == " ".join(w.word for w in words)
    assert math.isclose(cues(words)[0][0], 0.0)


LM_TEXT = """\\data\\
ngram 1=7
ngram 2=1

\\1-grams:
-1.0\t<s>\t-0.3
-0.6\t</s>
-2.0\t<unk>
-0.7\tthe\t-0.2
-0.9\tcat\t-0.2
-1.0\tsat\t-0.2
-1.2\tcot\t-0.2

\\2-grams:
-0.1\t<s> the

\\end\\
"""


def test_lm_decoding_spells_lexicon_words_with_times(babbler, monkeypatch, tmp_path):
    """The CTC head hears "the c?t sat" with the vowel of the middle word unclear (a 'k' slightly
    ahead of 'c', 'a' and 'o' tied): the lexicon and LM make it "the cat sat", with word times
    from the frames of the letters."""
    pytest.importorskip("flashlight.lib.text.decoder")
    model, processor = babbler
    tokenizer = processor.tokenizer
    (tmp_path / "lm.arpa").write_text(LM_TEXT)
    space = processor.tokenizer.characters.index(" ") + 4

    def spoken(encoder):
        log_probs = torch.full((1, encoder.hidden.shape[1], tokenizer.vocab_size), -20.0)
        log_probs[:, :, PAD_ID] = 0.0
        for frame, char in enumerate("th.e. ..c.a.t. s.a.t"):
            if char == ".":
                continue
            token = space if char == " " else tokenizer.encode(char)[0]
            log_probs[0, frame + 2, PAD_ID] = -20.0
            log_probs[0, frame + 2, token] = math.log(0.5) if char in "ac" else 0.0
            if char == "a" and frame < 12:  # the middle word's vowel: 'a' or 'o'
                log_probs[0, frame + 2, tokenizer.encode("o")[0]] = math.log(0.5)
            if char == "c":
                log_probs[0, frame + 2, tokenizer.encode("k")[0]] = math.log(0.5) + 0.1
        return torch.log_softmax(log_probs, -1)

    monkeypatch.setattr(model, "ctc_log_probs", spoken)
    result = decode(model, processor, sounds()["tone"], lm=str(tmp_path / "lm.arpa"), lm_weight=1.0, rescore_weight=0.0)
    assert result.text == "the cat sat"
    assert [n[0] for n in result.nbest][:2] == ["the cat sat", "the cot sat"]
    scores = [n[1] for n in result.nbest]
    assert scores == sorted(scores, reverse=True)
    # letters at frames 2,3,5 / 10,12,14 / 17,19,21 of 40 ms
    assert [(w.word, w.start, w.end) for w in result.words] == [
        ("the", 0.08, 0.24), ("cat", 0.4, 0.6), ("sat", 0.68, 0.88)]
    # geometric mean of about 0.48 (c), 0.5 (a) and 1 (t)
    assert result.words[0].confidence == pytest.approx(1.0, abs=1e-3)
    assert result.words[1].confidence == pytest.approx((0.475 * 0.5) ** (1 / 3), abs=0.01)


def text_in_every_format(transcript, duration=3.0):
    """The words each format shows, by format."""
    def subtitle_text(rendered):
        return " ".join(line for line in rendered.splitlines()[1:] if line and "-->" not in line and not line.isdigit())

    return {
        "text": render("text", "a.wav", transcript).rstrip("\n").split("\t", 1)[1],
        "json": json.loads(render("json", "a.wav", transcript, duration))["text"],
        "srt": subtitle_text("\n" + render("srt", "a.wav", transcript, duration)),
        "vtt": subtitle_text(render("vtt", "a.wav", transcript, duration).removeprefix("WEBVTT\n")),
    }


LESS_LM = """\\data\\
ngram 1=6
ngram 2=1

\\1-grams:
-1.0\t<s>\t-0.3
-0.6\t</s>
-2.0\t<unk>
-0.7\tless\t-0.2
-0.9\tlives\t-0.2
-1.0\tin\t-0.2

\\2-grams:
-0.1\t<s> less

\\end\\
"""


@pytest.mark.parametrize("heard", ["l.e.ss. .l.i.v.e.s. .i.n", "l.e.s.s. .l.i.v.e.s. .i.n"])
@pytest.mark.parametrize("search", ["lm", "joint"])
def test_one_transcription_gives_one_text_in_every_format(babbler, monkeypatch, tmp_path, heard, search):
    """The CTC head hears "less lives in", the doubled s of "less" on adjacent frames or apart.
    flashlight's lexicon search writes "less" either way; the subtitles once said "les" (its path
    collapsed), the JSON "less"."""
    model, processor = babbler
    tokenizer = processor.tokenizer
    space = tokenizer.characters.index(" ") + 4

    def spoken(encoder):
        log_probs = torch.full((1, encoder.hidden.shape[1], tokenizer.vocab_size), -20.0)
        log_probs[:, :, PAD_ID] = 0.0
        for frame, char in enumerate(heard):
            if char != ".":
                log_probs[0, frame + 2, PAD_ID] = -20.0
                log_probs[0, frame + 2, space if char == " " else tokenizer.encode(char)[0]] = 0.0
        return torch.log_softmax(log_probs, -1)

    monkeypatch.setattr(model, "ctc_log_probs", spoken)
    if search == "lm":
        pytest.importorskip("flashlight.lib.text.decoder")
        (tmp_path / "lm.arpa").write_text(LESS_LM)
        result = decode(model, processor, sounds()["tone"], lm=str(tmp_path / "lm.arpa"), lm_weight=1.0,
                        rescore_weight=0.0)
        assert result.text == "less lives in"
    else:  # the attention decoder babbles what it babbles: the formats must agree on it
        result = decode(model, processor, sounds()["tone"], guard=False)
        assert result.text and result.words
    assert " ".join(w.word for w in result.words) == result.text
    assert all(0 <= w.start <= w.end for w in result.words)
    assert set(text_in_every_format(result).values()) == {result.text}


def test_a_transcript_without_word_times_keeps_its_text_in_subtitles():
    untimed = Transcript("no ctc head here", [], [("no ctc head here", None)])
    assert set(text_in_every_format(untimed).values()) == {"no ctc head here"}
    assert "00:00:00,000 --> 00:00:03,000" in render("srt", "a.wav", untimed, 3.0)
    assert text_in_every_format(transcript())["srt"] == "hello world again"
