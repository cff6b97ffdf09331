import math

import pytest
import torch
import torch.nn.functional as F

from echoasr.model.generation import CTCPrefixScorer, _search, ctc_greedy_decode

BLANK, BOS, EOS = 0, 1, 2


# ---------------------------------------------------------------- CTC prefix scores


def reference_extend(x, length, r_n_prev, r_b_prev, prefix_length, c, last):
    """ESPnet's CTCPrefixScore recursion for one candidate, frame by frame (float64)."""
    r_n = torch.full((length,), -math.inf, dtype=torch.float64)
    r_b = torch.full((length,), -math.inf, dtype=torch.float64)
    if prefix_length == 0:
        r_n[0] = x[0, c]
    r_sum = torch.logaddexp(r_n_prev, r_b_prev)
    phi = r_b_prev if c == last else r_sum
    start = max(prefix_length, 1)
    log_psi = r_n[start - 1].clone()
    for t in range(start, length):
        r_n[t] = torch.logaddexp(r_n[t - 1], phi[t - 1]) + x[t, c]
        r_b[t] = torch.logaddexp(r_n[t - 1], r_b[t - 1]) + x[t, BLANK]
        log_psi = torch.logaddexp(log_psi, phi[t - 1] + x[t, c])
    if c == EOS:
        log_psi = r_sum[length - 1]
    return log_psi, r_n, r_b


def test_ctc_prefix_scores_match_frame_loop_and_ctc_loss():
    torch.manual_seed(0)
    frames, vocab = 9, 6
    lengths = torch.tensor([9, 6, 4])
    log_probs = F.log_softmax(3 * torch.randn(3, frames, vocab, dtype=torch.float64), dim=-1)
    scorer = CTCPrefixScorer(log_probs, lengths, BLANK, EOS)
    state = scorer.initial_state()
    candidates = torch.tensor([[1, 2, 3, 4, 5]] * 3)
    prefixes = [[3, 3, 4, 5, 4], [4, 5, 5, 3, 3], [5, 3, 3, 4, 4]]  # with repeats, longer than 4 frames
    reference = [
        (torch.full((int(n),), -math.inf, dtype=torch.float64), torch.cumsum(log_probs[i, : int(n), BLANK], 0))
        for i, n in enumerate(lengths)
    ]
    for step in range(5):
        parts = scorer.score(state, candidates)
        assert not torch.isnan(parts[0]).any()
        for i, n in enumerate(lengths.tolist()):
            last = prefixes[i][step - 1] if step else -1
            for j, c in enumerate(candidates[i].tolist()):
                expected, _, _ = reference_extend(log_probs[i], n, *reference[i], step, c, last)
                got = parts[0][i, j]
                if math.isinf(expected):
                    assert math.isinf(got) and got < 0
                else:
                    assert got.item() == pytest.approx(expected.item(), abs=1e-9)
            chosen = prefixes[i][step]
            _, r_n, r_b = reference_extend(log_probs[i], n, *reference[i], step, chosen, last)
            reference[i] = (r_n, r_b)
        tokens = torch.tensor([p[step] for p in prefixes])
        state = CTCPrefixScorer.select(parts, candidates, torch.arange(3), tokens, step + 1)
        # log psi(prefix + EOS) is the CTC probability of the whole prefix.
        eos_scores = scorer.score(state, torch.full((3, 1), EOS))[0][:, 0]
        targets = torch.tensor([p[: step + 1] for p in prefixes])
        loss = F.ctc_loss(log_probs.transpose(0, 1), targets, lengths, torch.full((3,), step + 1), reduction="none")
        for i in range(3):
            if math.isinf(loss[i].item()):
                assert eos_scores[i] == -math.inf
            else:
                assert eos_scores[i].item() == pytest.approx(-loss[i].item(), abs=1e-6)


def test_ctc_greedy_decode_collapses_repeats_and_blanks():
    path = torch.tensor([[0, 3, 3, 0, 3, 4, 4, 0, 5], [4, 4, 4, 0, 0, 0, 0, 0, 0]])
    log_probs = F.one_hot(path, 6).float().log()
    ids = ctc_greedy_decode(log_probs, torch.tensor([8, 9]), blank=0)
    assert ids.tolist() == [[3, 3, 4], [4, 0, 0]]


# ------------------------------------------------------------------- search


def search(model, features, lengths, beams, greedy, use_cache=True, ctc_weight=0.0, max_new=12):
    encoder = model.encode(features, lengths)
    limits = (encoder.lengths + 1).clamp(max=max_new)
    options = {"length_penalty": 1.0, "ngram": 0, "synced": False}
    with torch.no_grad():
        return _search(model, encoder, beams, limits, int(limits.max()), use_cache, ctc_weight, 10, options, greedy)


def well_separated_model(echo, **overrides):
    """Random weights large enough that the next-token choice is never a near tie."""
    return echo.tiny_model(seed=3, vocab_size=24, initializer_range=0.3, **overrides)


@pytest.mark.parametrize("ctc_weight", [0.0, 0.4])
def test_cached_and_uncached_decoding_agree(echo, ctc_weight):
    model = well_separated_model(echo, features=["mel", "f0"], rotary_theta_mode="phase", pitch_bias=True)
    features, lengths = echo.make_features(model.config, [30, 22, 13])
    for beams, greedy in [(1, True), (3, False)]:
        cached = search(model, features, lengths, beams, greedy, True, ctc_weight)
        uncached = search(model, features, lengths, beams, greedy, False, ctc_weight)
        assert torch.equal(cached, uncached)
        assert cached.shape[1] > 3 and len(set(cached.flatten().tolist())) > 3  # not a degenerate output


@pytest.mark.parametrize("ctc_weight", [0.0, 0.4])
def test_beam_one_equals_greedy(echo, ctc_weight):
    model = well_separated_model(echo)
    features, lengths = echo.make_features(model.config, [30, 25, 9, 17])
    greedy = search(model, features, lengths, 1, True, ctc_weight=ctc_weight)
    beam = search(model, features, lengths, 1, False, ctc_weight=ctc_weight)
    assert torch.equal(greedy, beam)


def check_layout(ids: torch.Tensor, limit: int) -> None:
    assert ids.dtype == torch.long and ids.shape[1] <= limit
    for row in ids.tolist():
        assert BOS not in row
        if EOS in row:
            end = row.index(EOS)
            assert all(t == 0 for t in row[end + 1 :]) and 0 not in row[:end]


@pytest.mark.parametrize("beams", [1, 4])
def test_generate_output_layout_and_limits(echo, beams):
    model = well_separated_model(echo)
    features, lengths = echo.make_features(model.config, [30, 11])
    ids = model.generate(features=features, feature_lengths=lengths, num_beams=beams, max_new_tokens=5)
    check_layout(ids, 5)
    short = model.generate(features=features, feature_lengths=lengths, num_beams=beams, max_length_ratio=0.25)
    encoder_lengths = model.encoder.output_lengths(lengths)
    for row, n in zip(short.tolist(), encoder_lengths.tolist()):
        assert len([t for t in row if t != 0]) <= math.ceil(0.25 * n) + 1


def test_generate_batch_equals_examples(echo):
    model = well_separated_model(echo, features=["mel", "f0"], rotary_radius="bounded", pitch_bias=True)
    lengths = [31, 18, 7]
    features, lengths_t = echo.make_features(model.config, lengths)
    for beams in (1, 3):
        batched = model.generate(features=features, feature_lengths=lengths_t, num_beams=beams)
        for i, n in enumerate(lengths):
            alone = model.generate(features=echo.slice_example(features, i, n), feature_lengths=torch.tensor([n]), num_beams=beams)
            row = batched[i, : alone.shape[1]]
            assert torch.equal(row, alone[0]) and torch.all(batched[i, alone.shape[1] :] == 0)


def test_no_repeat_ngram_guard(echo):
    model = echo.tiny_model(seed=0, ctc_weight=0.0)
    features, lengths = echo.make_features(model.config, [40, 40])
    plain = model.generate(features=features, feature_lengths=lengths, max_new_tokens=12)

    def repeated_bigram(row):
        pairs = [tuple(row[i : i + 2]) for i in range(len(row) - 1) if 0 not in row[i : i + 2]]
        return len(pairs) != len(set(pairs))

    assert any(repeated_bigram(row) for row in plain.tolist())  # this model does loop
    for beams in (1, 3):
        guarded = model.generate(features=features, feature_lengths=lengths, max_new_tokens=12, no_repeat_ngram_size=2, num_beams=beams)
        assert not any(repeated_bigram(row) for row in guarded.tolist())


def test_generate_tolerates_trainer_kwargs_and_rejects_the_rest(echo):
    model = well_separated_model(echo)
    features, lengths = echo.make_features(model.config, [20, 12])
    labels = echo.make_labels([[5, 6], [7]])
    ids = model.generate(
        features=features, feature_lengths=lengths, labels=labels, synced_gpus=True, max_length=4, num_beams=None
    )
    check_layout(ids, 3)
    with pytest.raises(ValueError, match="do_sample"):
        model.generate(features=features, feature_lengths=lengths, do_sample=True)
    with pytest.raises(TypeError, match="top_k"):
        model.generate(features=features, feature_lengths=lengths, top_k=5)


def test_generation_config_supplies_defaults(echo):
    model = well_separated_model(echo)
    features, lengths = echo.make_features(model.config, [30])
    model.generation_config.max_new_tokens = 2
    assert model.generate(features=features, feature_lengths=lengths).shape[1] <= 2
    assert model.generate(features=features, feature_lengths=lengths, max_new_tokens=4).shape[1] <= 4


def test_trainer_default_filling_does_not_truncate(echo):
    from transformers import GenerationConfig

    model = echo.tiny_model(max_target_positions=40, ctc_weight=0.0)
    # What Seq2SeqTrainer.prediction_step does to the model's generation config.
    model.generation_config.update(**GenerationConfig._get_default_generation_params(), defaults_only=True)
    features, lengths = echo.make_features(model.config, [80])
    model.generation_config.ctc_weight = 0.0
    ids = model.generate(features=features, feature_lengths=lengths, max_length_ratio=2.0)
    assert ids.shape[1] > 19  # not cut at HF's default max_length of 20


def test_beam_scores_never_nan_with_dead_beams(echo, monkeypatch):
    # More beams than CTC-scored candidates: some beams die (-inf), which must not turn into NaN.
    from echoasr.model import generation

    seen = []
    original = generation.StepScorer.scores

    def recording(self, tokens):
        scores = original(self, tokens)
        seen.append(bool(torch.isnan(scores).any()))
        return scores

    monkeypatch.setattr(generation.StepScorer, "scores", recording)
    model = well_separated_model(echo)
    features, lengths = echo.make_features(model.config, [30, 25, 9, 17])
    ids = model.generate(features=features, feature_lengths=lengths, num_beams=8, ctc_candidates=2, ctc_weight=0.5)
    check_layout(ids, 16)
    assert seen and not any(seen)


# ---------------------------------------------------- beam search against exhaustive search


def exhaustive_best(model, features, lengths, limit, ctc_weight, penalty):
    """The best output over every token sequence of at most limit - 1 tokens followed by EOS (a
    sequence of limit - 1 tokens is the forced end at the limit), scored independently: teacher-
    forced attention log-probabilities (EOS included) and the CTC probability of the whole
    sequence from `F.ctc_loss`, joint-weighted and divided by (tokens + 1) ** penalty."""
    import itertools

    config = model.config
    words = [t for t in range(config.vocab_size) if t not in (BLANK, BOS, EOS)]
    encoder = model.encode(features, lengths)
    ctc_log_probs = model.ctc_log_probs(encoder) if ctc_weight > 0 else None
    best, best_score, forced_best = None, -math.inf, False
    for n in range(limit):
        for sequence in itertools.product(words, repeat=n):
            inputs = torch.tensor([[BOS, *sequence]])
            with torch.no_grad():
                logits = model.decoder.logits(model.decoder(inputs, encoder))[0].float()
            log_probs = F.log_softmax(logits, dim=-1)
            targets = [*sequence, EOS]
            attention = sum(log_probs[t, token].item() for t, token in enumerate(targets))
            total = attention
            if ctc_weight > 0:
                ctc = -F.ctc_loss(ctc_log_probs.transpose(0, 1), torch.tensor([list(sequence) or [0]]),
                                  encoder.lengths, torch.tensor([n]), blank=BLANK, reduction="sum").item()
                total = (1 - ctc_weight) * attention + ctc_weight * ctc
            score = total / (n + 1) ** penalty
            if score > best_score:
                best, best_score, forced_best = list(sequence), score, n == limit - 1
    return best, forced_best


@pytest.mark.parametrize("ctc_weight", [0.0, 0.4])
@pytest.mark.parametrize("penalty", [0.5, 2.0])
def test_beam_search_equals_exhaustive_search_with_forced_ends(echo, ctc_weight, penalty):
    # Two word tokens and a limit of 4 steps: 15 hypotheses, fewer than the 16 beams, so the
    # beam search must return the exhaustive optimum; several models make forced ends win.
    limit, forced_wins = 4, 0
    for seed in range(6):
        model = echo.tiny_model(seed=seed, vocab_size=5, initializer_range=0.5)
        features, lengths = echo.make_features(model.config, [14], seed=seed)
        encoder = model.encode(features, lengths)
        options = {"length_penalty": penalty, "ngram": 0, "synced": False}
        with torch.no_grad():
            ids = _search(model, encoder, 16, torch.tensor([limit]), limit, True, ctc_weight, 10, options, False)
        got = [t for t in ids[0].tolist() if t not in (BLANK, EOS)]
        expected, forced = exhaustive_best(model, features, lengths, limit, ctc_weight, penalty)
        assert got == expected, (seed, got, expected)
        forced_wins += forced
    assert forced_wins > 0  # forced ends are exercised


@pytest.mark.parametrize("penalty", [0.0, 1.0])
def test_nbest_lists_finished_hypotheses_with_their_log_probs(echo, penalty):
    from echoasr.model.rescoring import sequence_log_probs

    model = well_separated_model(echo)
    features, lengths = echo.make_features(model.config, [30, 17])
    options = dict(features=features, feature_lengths=lengths, num_beams=4, max_new_tokens=8, length_penalty=penalty,
                   ctc_weight=0.0)  # attention alone: its log-probabilities can be recomputed
    with torch.no_grad():
        best = model.generate(**options)
        nbest = model.generate(**options, nbest=3)
        encoder = model.encode(features, lengths)
        for b in range(2):
            assert nbest.sequences[b, 0, : best.shape[1]].tolist() == best[b].tolist()
            rows = [[t for t in row if t not in (BLANK, EOS)] for row in nbest.sequences[b].tolist()]
            assert len({tuple(r) for r in rows}) == 3  # three different hypotheses
            teacher_forced = sequence_log_probs(model, encoder, rows, [b] * 3)
            assert torch.allclose(nbest.log_probs[b], teacher_forced, atol=1e-4)
            lengths_with_eos = torch.tensor([len(r) + 1 for r in rows], dtype=torch.float32)
            assert torch.allclose(nbest.scores[b], teacher_forced / lengths_with_eos**penalty, atol=1e-4)
            assert nbest.scores[b].tolist() == sorted(nbest.scores[b].tolist(), reverse=True)
    with pytest.raises(ValueError, match="nbest"):
        model.generate(**options, nbest=5)


def test_nbest_falls_back_to_the_best_running_hypothesis(echo, monkeypatch):
    # Every expansion after the first token is impossible: nothing finishes; as in `generate`
    # the n-best then holds the best running hypothesis, with the impossible score.
    from echoasr.model import generation

    original = generation.StepScorer.scores

    def dead_after_one_token(self, tokens):
        scores = original(self, tokens)
        return scores if tokens.shape[1] == 1 else torch.full_like(scores, -math.inf)

    monkeypatch.setattr(generation.StepScorer, "scores", dead_after_one_token)
    model = well_separated_model(echo)
    features, lengths = echo.make_features(model.config, [30, 17])
    options = dict(features=features, feature_lengths=lengths, num_beams=3, ctc_weight=0.0)
    with torch.no_grad():
        best = model.generate(**options)
        nbest = model.generate(**options, nbest=2)
    assert EOS not in best.flatten().tolist() and (best != 0).any(1).all()
    assert nbest.sequences[:, 0, : best.shape[1]].tolist() == best.tolist()
    assert (nbest.scores == -math.inf).all() and (nbest.log_probs == -math.inf).all()


def test_the_model_config_sets_the_length_cap_and_the_repetition_guard(echo):
    """`decode_max_length_ratio` / `decode_no_repeat_ngram_size` saved with a model act as the
    defaults of `max_length_ratio` / `no_repeat_ngram_size`; an explicit argument still wins."""
    looping = echo.tiny_model(seed=0, ctc_weight=0.0)
    features, lengths = echo.make_features(looping.config, [40, 40])
    guarded = echo.tiny_model(seed=0, ctc_weight=0.0, decode_max_length_ratio=0.25, decode_no_repeat_ngram_size=2)
    by_arguments = looping.generate(features=features, feature_lengths=lengths, max_length_ratio=0.25,
                                    no_repeat_ngram_size=2)
    by_config = guarded.generate(features=features, feature_lengths=lengths)
    assert torch.equal(by_config, by_arguments)
    assert not torch.equal(by_config, looping.generate(features=features, feature_lengths=lengths))
    overridden = guarded.generate(features=features, feature_lengths=lengths, max_length_ratio=1.0, no_repeat_ngram_size=0)
    assert torch.equal(overridden, looping.generate(features=features, feature_lengths=lengths))


def test_hf_default_filled_generation_config_keeps_the_model_guards(echo):
    """A saved or Trainer-filled generation config holds HF's defaults (`no_repeat_ngram_size` 0,
    `max_length` 20) for every unset field: they must not switch the model's own guards off."""
    from transformers import GenerationConfig

    guarded = echo.tiny_model(seed=0, ctc_weight=0.0, decode_max_length_ratio=0.25, decode_no_repeat_ngram_size=2)
    features, lengths = echo.make_features(guarded.config, [40, 40])
    expected = guarded.generate(features=features, feature_lengths=lengths)
    guarded.generation_config.update(**GenerationConfig._get_default_generation_params(), defaults_only=True)
    assert guarded.generation_config.no_repeat_ngram_size == 0
    assert torch.equal(guarded.generate(features=features, feature_lengths=lengths), expected)
    looping = guarded.generate(features=features, feature_lengths=lengths, no_repeat_ngram_size=0, max_length_ratio=1.0)
    assert not torch.equal(looping, expected)  # the guards are active in this case
