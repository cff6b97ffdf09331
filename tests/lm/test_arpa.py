"""ARPA files: the pocketsphinx conversion, IRSTLM builds, reading vocabularies."""

import math
import shutil

import pytest

from echoasr.errors import EchoError
from echoasr.lm.arpa import (arpa_line, build_lm, convert_pocketsphinx, read_unigrams, unigram_scale,
                             vocabulary)

HANDMADE = """\\data\\
ngram 1=5
ngram 2=2

\\1-grams:
-1.0\t<s>\t-0.5
-0.5\t</s>
-0.6\tcat\t-0.3
-0.9\tdog\t-0.2
-2.0\t<unk>

\\2-grams:
-0.1\t<s> cat
-0.2\tcat dog

\\end\\
"""


def test_arpa_line_rescales_and_normalises_the_layout():
    # pocketsphinx separates the words with tabs; ARPA wants spaces, and log10 values
    assert arpa_line("-512\tthe\tcat\t-256\n", 2, scale=512.0) == "-1\tthe cat\t-0.5\n"
    assert arpa_line("-512\tthe\tcat\t-256\n", 2, scale=512.0, backoff=False) == "-1\tthe cat\n"
    assert arpa_line("-1.5 dog\n", 1) == "-1.5\tdog\n"


def test_unigram_scale_is_read_off_the_probability_mass():
    probabilities = [0.5, 0.25, 0.25]
    log10 = [math.log10(p) for p in probabilities]
    assert unigram_scale(log10) == 1.0
    assert unigram_scale([512 * v for v in log10]) == 512.0
    with pytest.raises(EchoError):
        unigram_scale([-5.0, -5.0])


def test_handmade_model_known_values(tmp_path):
    path = tmp_path / "lm.arpa"
    path.write_text(HANDMADE)
    assert dict(read_unigrams(path)) == {"<s>": -1.0, "</s>": -0.5, "cat": -0.6, "dog": -0.9, "<unk>": -2.0}
    assert vocabulary(path) == ["cat", "dog"]
    kenlm = pytest.importorskip("kenlm")
    model = kenlm.Model(str(path))
    scores = [score for score, _, _ in model.full_scores("cat dog", bos=True, eos=True)]
    # p(cat|<s>) explicit, p(dog|cat) explicit, p(</s>|dog) = backoff(dog) + p(</s>)
    assert scores == pytest.approx([-0.1, -0.2, -0.2 + -0.5], abs=1e-6)


def test_pocketsphinx_conversion_sums_to_one(tmp_path):
    pytest.importorskip("pocketsphinx")
    path = convert_pocketsphinx(tmp_path / "en-us.arpa")
    unigrams = list(read_unigrams(path))
    assert len(unigrams) == 72547
    assert sum(10.0 ** value for _, value in unigrams) == pytest.approx(1.0, abs=1e-3)
    with open(path) as lines:
        header = [next(lines) for _ in range(3)]
    assert header[1].startswith("ngram 1=72547") and int(header[2].split("=")[1]) > 2_000_000
    kenlm = pytest.importorskip("kenlm")
    model = kenlm.Model(str(path))  # a well-formed ARPA file
    assert model.score("the cat sat", bos=True, eos=True) > model.score("sat cat the", bos=True, eos=True)


@pytest.mark.skipif(shutil.which("tlm") is None and not __import__("pathlib").Path("/usr/lib/irstlm/bin/tlm").exists(),
                    reason="IRSTLM is missing (scripts/install-system-deps)")
def test_build_lm_with_irstlm(tmp_path):
    text = tmp_path / "text.txt"
    text.write_text("The cat sat on the mat.\nthe dog sat\n\nA cat ran\n")
    path = build_lm([text], tmp_path / "lm.arpa", order=2)
    words = vocabulary(path)
    assert {"the", "cat", "sat", "on", "mat", "dog", "a", "ran"} <= set(words)
    unigrams = dict(read_unigrams(path))
    assert unigrams["the"] > unigrams["mat"]  # seen three times against once
    with pytest.raises(EchoError):
        build_lm([tmp_path / "missing.txt"], tmp_path / "x.arpa")
