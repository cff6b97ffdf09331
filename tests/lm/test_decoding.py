"""The CTC + word LM beam search against a brute-force scorer on a tiny vocabulary."""

import itertools
import logging
import math

import numpy as np
import pytest

pytest.importorskip("flashlight.lib.text.decoder")

from echoasr.lm.decoding import (BLANK_ID, CTCLMDecoder, LMOptions, collapse, ctc_align, token_pieces,  # noqa: E402
                                  word_separator, word_timings)
from echoasr.text.tokenizers import BASE_ALPHABET, CharTokenizer  # noqa: E402

# A bigram model over four words whose spellings overlap, so the LM decides between them.
UNIGRAMS = {"<s>": (-99.0, -0.3), "</s>": (-0.7, 0.0), "<unk>": (-3.0, 0.0),
            "a": (-1.2, -0.1), "ana": (-0.9, -0.2), "an": (-1.0, -0.25), "na": (-1.1, -0.15), "nan": (-1.3, -0.1)}
BIGRAMS = {("<s>", "ana"): -0.4, ("ana", "nan"): -0.3, ("an", "</s>"): -0.2, ("na", "na"): -0.5, ("nan", "</s>"): -0.25}
WORDS = ["ana", "an", "na", "nan", "a"]


def write_arpa(path):
    lines = ["\\data\\", f"ngram 1={len(UNIGRAMS)}", f"ngram 2={len(BIGRAMS)}", "", "\\1-grams:"]
    lines += [f"{p}\t{w}\t{b}" for w, (p, b) in UNIGRAMS.items()]
    lines += ["", "\\2-grams:"] + [f"{p}\t{v} {w}" for (v, w), p in BIGRAMS.items()] + ["", "\\end\\", ""]
    path.write_text("\n".join(lines))
    return path


def lm_log10(words):
    """Sentence log10 probability with <s> and </s> under the back-off bigram model."""
    total, previous = 0.0, "<s>"
    for word in [*words, "</s>"]:
        total += BIGRAMS.get((previous, word), UNIGRAMS[previous][1] + UNIGRAMS[word][0]) if (previous, word) not in BIGRAMS else BIGRAMS[(previous, word)]
        previous = word
    return total


def viterbi(log_probs, tokens, one_frame=()):
    """Best CTC alignment score of a token sequence (max over paths); the tokens at positions
    ``one_frame`` take exactly one frame (flashlight's lexicon decoder moves to the next word as
    soon as a word's last token is emitted, so that token cannot stretch)."""
    if not tokens:
        return float(log_probs[:, BLANK_ID].sum())
    states = [BLANK_ID]
    for token in tokens:
        states += [token, BLANK_ID]
    stretch = np.ones(len(states), dtype=bool)
    for position in one_frame:
        stretch[2 * position + 1] = False
    labels = np.array(states)
    skip = np.zeros(len(states), dtype=bool)
    skip[2:] = (labels[2:] != BLANK_ID) & (labels[2:] != labels[:-2])
    score = np.full(len(states), -np.inf)
    score[:2] = log_probs[0, states[:2]]
    for t in range(1, log_probs.shape[0]):
        previous = np.concatenate([[-np.inf], score[:-1]])
        jump = np.where(skip, np.concatenate([[-np.inf, -np.inf], score[:-2]]), -np.inf)
        score = np.maximum.reduce([np.where(stretch, score, -np.inf), previous, jump]) + log_probs[t, states]
    return max(score[-1], score[-2])


@pytest.fixture
def tokenizer():
    return CharTokenizer(sorted(BASE_ALPHABET))


def emissions(tokenizer, seed, frames=9):
    rng = np.random.default_rng(seed)
    used = [BLANK_ID] + tokenizer.encode("a n")  # blank, a, space, n
    logits = np.full((frames, tokenizer.vocab_size), -30.0)
    logits[:, used] = rng.normal(0, 2.0, (frames, len(used)))
    return (logits - np.logaddexp.reduce(logits, axis=1, keepdims=True)).astype(np.float32)


def brute_force(log_probs, tokenizer, lm_weight, bonus):
    space = word_separator(tokenizer)
    best = (-math.inf, None)
    for count in range(4):
        for words in itertools.product(WORDS, repeat=count):
            lm = lm_log10(words)
            # flashlight may put 0, 1 or 2 separators (spaces) before, between and after words
            for gaps in itertools.product(range(3), repeat=count + 1):
                tokens, word_ends = [space] * gaps[0], []
                for word, gap in zip(words, gaps[1:]):
                    tokens += tokenizer.encode(word)
                    word_ends.append(len(tokens) - 1)
                    tokens += [space] * gap
                total = viterbi(log_probs, tokens, word_ends) + lm_weight * lm + bonus * count
                if total > best[0]:
                    best = (total, " ".join(words))
    return best


@pytest.mark.parametrize("seed,lm_weight,bonus", [(0, 0.5, 0.0), (1, 1.0, 1.0), (2, 2.0, -0.5), (3, 0.8, 2.0)])
def test_decoder_finds_the_brute_force_best(tmp_path, tokenizer, seed, lm_weight, bonus):
    options = LMOptions(lm_weight=lm_weight, word_bonus=bonus, beam=500, beam_tokens=40, beam_threshold=1e4, nbest=5)
    decoder = CTCLMDecoder(write_arpa(tmp_path / "lm.arpa"), tokenizer, options)
    log_probs = emissions(tokenizer, seed)
    best_score, best_text = brute_force(log_probs, tokenizer, lm_weight, bonus)
    hypotheses = decoder.decode(log_probs)
    assert hypotheses[0].text == best_text
    assert hypotheses[0].score == pytest.approx(best_score, abs=1e-3)
    words = hypotheses[0].text.split()
    assert hypotheses[0].lm_score == pytest.approx(lm_log10(words), abs=1e-4)


def test_the_lm_changes_the_answer(tmp_path, tokenizer):
    """With the LM weight at 0 the decoder follows the acoustics; a strong LM overrides them."""
    log_probs = emissions(tokenizer, 5)
    decoder = CTCLMDecoder(write_arpa(tmp_path / "lm.arpa"), tokenizer,
                           LMOptions(lm_weight=0.0, beam=500, beam_tokens=40, beam_threshold=1e4))
    texts = set()
    for weight in (0.0, 20.0):
        decoder.set_weights(weight, 0.0)
        best = decoder.decode(log_probs)[0]
        assert best.text == brute_force(log_probs, tokenizer, weight, 0.0)[1]
        texts.add(best.text)
    assert len(texts) == 2


def test_collapse_and_alignment(tokenizer):
    assert collapse([0, 5, 5, 0, 5, 7, 7, 0]) == ([5, 5, 7], [1, 4, 5])
    # a path with clear peaks: the Viterbi alignment finds their frames
    tokens = tokenizer.encode("na")
    log_probs = np.full((6, tokenizer.vocab_size), -20.0, dtype=np.float32)
    log_probs[:, BLANK_ID] = -0.01
    log_probs[1, tokens[0]] = log_probs[4, tokens[1]] = -0.01
    log_probs[1, BLANK_ID] = log_probs[4, BLANK_ID] = -20.0
    assert ctc_align(log_probs, tokens) == [1, 4]


def test_word_timings(tokenizer):
    from echoasr.lm.decoding import Hypothesis

    tokens = tokenizer.encode("an na")
    frames = [2, 3, 5, 7, 9]
    log_probs = np.full((12, tokenizer.vocab_size), math.log(0.5), dtype=np.float32)
    words = word_timings(Hypothesis("an na", tokens, frames, 0.0), log_probs, tokenizer, frame_seconds=0.04)
    assert [(w.word, w.start, w.end) for w in words] == [("an", 0.08, 0.16), ("na", 0.28, 0.4)]
    assert all(w.confidence == pytest.approx(0.5) for w in words)


def test_sentencepiece_model(tmp_path):
    """Subword models mark word starts in their pieces: the words come out whole, with times."""
    from echoasr.text.tokenizers import SentencePieceTokenizer

    tokenizer = SentencePieceTokenizer.train(["the cat sat", "a cat sat on the mat", "the dog ran", "cats and dogs"] * 5,
                                             vocab_size=23)
    arpa = tmp_path / "lm.arpa"
    arpa.write_text("\\data\\\nngram 1=6\nngram 2=1\n\n\\1-grams:\n-1\t<s>\t-0.3\n-0.6\t</s>\n-2\t<unk>\n"
                    "-0.7\tthe\t-0.2\n-0.9\tcat\t-0.2\n-1\tsat\t-0.2\n\n\\2-grams:\n-0.1\t<s> the\n\n\\end\\\n")
    ids = tokenizer.encode("the cat sat")
    assert len(ids) > 3  # "the" is spelt in several pieces
    log_probs = np.full((3 * len(ids) + 2, tokenizer.vocab_size), -20.0)
    log_probs[:, BLANK_ID] = 0.0
    for k, token in enumerate(ids):
        log_probs[2 + 3 * k, BLANK_ID], log_probs[2 + 3 * k, token] = -20.0, 0.0
    log_probs = (log_probs - np.logaddexp.reduce(log_probs, axis=1, keepdims=True)).astype(np.float32)
    best = CTCLMDecoder(arpa, tokenizer, LMOptions()).decode(log_probs)[0]
    assert best.text == "the cat sat"
    words = word_timings(best, log_probs, tokenizer, 0.04)
    pieces = token_pieces(tokenizer)
    starts = [2 + 3 * k for k, token in enumerate(ids) if pieces[token].startswith("\u2581")]
    assert [w.word for w in words] == ["the", "cat", "sat"]
    assert [round(w.start / 0.04) for w in words] == starts


@pytest.mark.skipif(not __import__("pathlib").Path("/usr/lib/irstlm/bin/tlm").exists(), reason="IRSTLM is missing")
def test_character_lm_is_lexicon_free(tmp_path, tokenizer):
    """A character LM decodes without a lexicon: it writes a word it never saw ("zat") and settles
    an ambiguous letter the way its text does ("cat", not "cot")."""
    from echoasr.lm.arpa import build_lm
    from echoasr.lm.decoding import CTCCharLMDecoder, make_decoder

    text = tmp_path / "text.txt"
    text.write_text("the cat sat\nthe cat ran\na cat and a hat\n" * 3)
    lm = build_lm([text], tmp_path / "chars.arpa", order=4, characters=True)
    decoder = make_decoder(lm, tokenizer, LMOptions(lm_weight=0.5))
    assert isinstance(decoder, CTCCharLMDecoder)
    spoken = "cat zat"
    log_probs = np.full((3 * len(spoken) + 2, tokenizer.vocab_size), -20.0)
    log_probs[:, BLANK_ID] = 0.0
    for k, char in enumerate(spoken):
        frame = 1 + 3 * k
        token = word_separator(tokenizer) if char == " " else tokenizer.encode(char)[0]
        log_probs[frame, BLANK_ID], log_probs[frame, token] = -20.0, 0.0
        if char == "a" and k == 1:  # 'a' or 'o': the acoustics cannot tell
            log_probs[frame, tokenizer.encode("o")[0]] = 0.0
    log_probs = (log_probs - np.logaddexp.reduce(log_probs, axis=1, keepdims=True)).astype(np.float32)
    hypotheses = decoder.decode(log_probs)
    assert hypotheses[0].text == "cat zat"
    assert "cot zat" in [h.text for h in hypotheses[1:]]
    decoder.set_weights(0.0, 0.0)  # without the LM the tie stays a tie: both spellings score the same
    tied = decoder.decode(log_probs)
    assert tied[0].score == pytest.approx(tied[1].score, abs=1e-4)


def test_kenlm_loading_banner_goes_to_the_debug_log(tmp_path, tokenizer, capfd, caplog):
    """KenLM prints 'Loading the LM will be faster...' and a progress bar to fd 2 on every ARPA load."""
    with caplog.at_level(logging.DEBUG, logger="echoasr.lm.decoding"):
        decoder = CTCLMDecoder(write_arpa(tmp_path / "lm.arpa"), tokenizer)
    assert "Loading the LM" not in capfd.readouterr().err
    assert any("Loading the LM will be faster" in record.getMessage() for record in caplog.records)
    assert decoder.decode(emissions(tokenizer, 0))[0].text  # the model loaded and decodes
