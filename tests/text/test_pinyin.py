import pytest

from echoasr.text import CharTokenizer, normalize
from echoasr.text.pinyin import TONE_MARKS, marked, split_tone, strip_tones


def test_tone_digits_become_tone_letters_and_back():
    assert marked("ma1 ma2 ma3 ma4") == "ma\u02c9 ma\u02ca ma\u02c7 ma\u02cb"
    assert [split_tone(w) for w in marked("li3 bu4").split()] == [("li", 3), ("bu", 4)]
    assert split_tone("ma") == ("ma", None)
    assert strip_tones("ma\u02c9 \u02c7 bu\u02cb") == "ma bu"  # a lone tone letter goes too
    for bad in ("ma", "ma5", "1"):
        with pytest.raises(ValueError):
            marked(bad)


def test_tones_survive_the_normaliser_and_the_character_tokenizer():
    # Tone digits would not: the normaliser spells them out.
    assert normalize("ma1 ba3") == "ma one ba three"
    text = marked("ma1 ma2 ba3 di4")
    assert normalize(text) == text
    tokenizer = CharTokenizer.train([text])
    ids = tokenizer.encode(text)
    assert tokenizer.decode(ids) == text and tokenizer.unk_id not in ids
    assert len({tokenizer.encode(mark)[0] for mark in TONE_MARKS.values()}) == 4
