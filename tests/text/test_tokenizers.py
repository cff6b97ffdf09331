import json

import pytest

from echoasr.errors import EchoError
from echoasr.text import (
    BOS_ID, EOS_ID, PAD_ID, UNK_ID, CharTokenizer, SentencePieceTokenizer, load_tokenizer, normalize,
    train_tokenizer,
)

TRAINING = [
    "The quick brown fox jumps over the lazy dog.",
    "She sells sea shells by the sea shore!",
    "It's 5 o'clock somewhere, isn't it?",
    "Please enter your password followed by the pound key.",
    "And God said, Let there be light: and there was light.",
    "A watched pot never boils; a rolling stone gathers no moss.",
] * 4
HELD_OUT = ["the dog jumps over the shells", "please light the stone at five o'clock", "Zebras quiz jovial yaks!"]


def test_special_ids_match_the_model_contract():
    assert (PAD_ID, BOS_ID, EOS_ID, UNK_ID) == (0, 1, 2, 3)


@pytest.mark.parametrize("model_type", ["unigram", "bpe"])
def test_sentencepiece_round_trip_and_special_pieces(model_type):
    tokenizer = train_tokenizer(TRAINING, "sentencepiece", vocab_size=60, model_type=model_type)
    assert tokenizer.vocab_size == 60
    assert (tokenizer.pad_id, tokenizer.bos_id, tokenizer.eos_id, tokenizer.unk_id) == (0, 1, 2, 3)
    for text in TRAINING + HELD_OUT[:2]:
        ids = tokenizer.encode(text)
        assert ids and min(ids) > UNK_ID  # no specials (and no unknowns) inside a text
        assert tokenizer.decode(ids) == normalize(text)


def test_sentencepiece_training_is_deterministic():
    first = train_tokenizer(TRAINING, vocab_size=50)
    second = train_tokenizer(list(reversed(TRAINING)), vocab_size=50)
    assert first.model_proto == second.model_proto


def test_char_round_trip_covers_any_english_text():
    tokenizer = train_tokenizer(TRAINING, "char")
    assert tokenizer.vocab_size == 4 + 28  # specials + space, apostrophe, a-z
    for text in TRAINING + HELD_OUT:
        assert tokenizer.decode(tokenizer.encode(text)) == normalize(text)
    assert tokenizer.encode("ab") == [tokenizer.encode("a")[0], tokenizer.encode("b")[0]]


def test_char_tokenizer_learns_other_scripts_and_marks_unknowns():
    tokenizer = CharTokenizer.train(["привет"])
    assert tokenizer.decode(tokenizer.encode("Привет!")) == "привет"
    assert tokenizer.encode("日") == [UNK_ID]


@pytest.mark.parametrize("kind", ["char", "sentencepiece"])
def test_encode_normalises_and_decode_skips_specials(kind):
    tokenizer = train_tokenizer(TRAINING, kind, vocab_size=50)
    assert tokenizer.encode("THE  Dog!") == tokenizer.encode("the dog")
    ids = tokenizer.encode("the dog")
    padded = [BOS_ID, *ids, UNK_ID, EOS_ID, PAD_ID, PAD_ID, tokenizer.vocab_size + 5]
    assert tokenizer.decode(padded) == "the dog"
    assert tokenizer.encode("") == [] and tokenizer.decode([]) == ""


@pytest.mark.parametrize("kind", ["char", "sentencepiece"])
def test_save_and_load_detects_the_kind(tmp_path, kind):
    tokenizer = train_tokenizer(TRAINING, kind, vocab_size=50)
    tokenizer.save(tmp_path / "tok")
    loaded = load_tokenizer(tmp_path / "tok")
    assert type(loaded) is type(tokenizer)
    assert loaded.vocab_size == tokenizer.vocab_size
    for text in HELD_OUT:
        assert loaded.encode(text) == tokenizer.encode(text)
    config = json.loads((tmp_path / "tok" / "tokenizer_config.json").read_text())
    assert config["type"] == kind and config["pad_id"] == 0 and config["eos_id"] == 2
    assert not [p for p in (tmp_path / "tok").iterdir() if p.name.startswith(".")]  # no temp files left


def test_too_large_vocabulary_is_a_clear_error():
    with pytest.raises(EchoError, match="Vocabulary size too high"):
        train_tokenizer(TRAINING[:2], vocab_size=5000)


@pytest.mark.parametrize("texts", [[], ["", "  ", "!!"]])
def test_no_transcripts_is_an_error(texts):
    with pytest.raises(EchoError, match="no non-empty transcripts"):
        SentencePieceTokenizer.train(texts)


def test_bad_kind_and_bad_directories(tmp_path):
    with pytest.raises(EchoError, match="unknown tokenizer kind"):
        train_tokenizer(TRAINING, "words")
    with pytest.raises(EchoError, match="no tokenizer here"):
        load_tokenizer(tmp_path)
    (tmp_path / "tokenizer_config.json").write_text("{not json")
    with pytest.raises(EchoError, match="not a tokenizer config"):
        load_tokenizer(tmp_path)
    (tmp_path / "tokenizer_config.json").write_text('{"type": "sentencepiece"}')
    with pytest.raises(EchoError, match="cannot read the SentencePiece model"):
        load_tokenizer(tmp_path)
