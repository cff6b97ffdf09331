"""Sentence scores of the word LM used to rescore an attention n-best, against the ARPA file's
numbers combined by hand (back-off included), through both KenLM bindings."""

import importlib.util
import math

import pytest

from echoasr.errors import EchoError
from echoasr.lm import rescoring
from echoasr.lm.rescoring import WordLMScorer, lm_words

# A trigram model: "<s> the cat" is a trigram, "the cat sat" backs off to the bigram "cat sat",
# "cat sat </s>" and "sat the" back off to unigrams.
TRIGRAM_ARPA = """\\data\\
ngram 1=6
ngram 2=4
ngram 3=1

\\1-grams:
-1.0\t<s>\t-0.5
-0.7\t</s>
-2.0\t<unk>
-0.6\tthe\t-0.3
-0.8\tcat\t-0.2
-0.9\tsat\t-0.15

\\2-grams:
-0.2\t<s> the\t-0.05
-0.1\tthe cat\t-0.4
-0.3\tcat sat\t-0.25
-0.35\tsat </s>

\\3-grams:
-0.05\t<s> the cat

\\end\\
"""

BACKENDS = [pytest.param(rescoring._KenLMModule, id="kenlm",
                         marks=pytest.mark.skipif(importlib.util.find_spec("kenlm") is None, reason="no kenlm")),
            pytest.param(rescoring._FlashlightKenLM, id="flashlight",
                         marks=pytest.mark.skipif(importlib.util.find_spec("flashlight") is None,
                                                  reason="no flashlight-text"))]


@pytest.fixture
def arpa(tmp_path):
    path = tmp_path / "lm.arpa"
    path.write_text(TRIGRAM_ARPA)
    return path


@pytest.mark.parametrize("backend", BACKENDS)
def test_sentence_scores_follow_the_back_off_model(arpa, backend, monkeypatch):
    monkeypatch.setattr(rescoring, "_backend", lambda: backend)
    scorer = WordLMScorer(arpa)
    # p(the | <s>) + p(cat | <s> the) + [bo(the cat) + p(sat | cat)] + [bo(cat sat) + p(</s> | sat)]
    the_cat_sat = -0.2 + -0.05 + (-0.4 + -0.3) + (-0.25 + -0.35)
    # p(sat | <s>) by back-off + p(the | sat) by back-off + p(dog = <unk> | the) by back-off + p(</s>)
    sat_the_dog = (-0.5 + -0.9) + (-0.15 + -0.6) + (-0.3 + -2.0) + -0.7
    scores = scorer.score(["The cat, sat!", "sat the dog", ""])
    assert scores[0] == pytest.approx(math.log(10) * the_cat_sat, abs=1e-5)
    assert scores[1] == pytest.approx(math.log(10) * sat_the_dog, abs=1e-5)
    assert scores[2] == pytest.approx(math.log(10) * (-0.5 + -0.7), abs=1e-5)  # <s> </s> by back-off


def test_texts_are_put_in_the_lm_form():
    assert lm_words("The Cat's 2 dogs.") == ["the", "cat's", "two", "dogs"]


def test_a_character_lm_is_refused(tmp_path):
    path = tmp_path / "chars.arpa"
    path.write_text(TRIGRAM_ARPA.replace("the", "t").replace("cat", "c").replace("sat", "|"))
    with pytest.raises(EchoError, match="character LM") as error:
        WordLMScorer(path)
    assert "\n" not in str(error.value)
