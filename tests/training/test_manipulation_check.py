"""The manipulation check end to end: a trained pitch run scored with its f0 replaced."""

import numpy as np

from echoasr import evaluation
from echoasr.experiments.manipulation import evaluate_replaced_f0
from echoasr.experiments.runner import per_utterance_errors


def test_a_trained_run_is_scored_with_flat_f0(trained_run, tts_corpus, tmp_path, monkeypatch):
    run, _ = trained_run
    seen = []
    real_decode = evaluation.decode_chunks
    monkeypatch.setattr(evaluation, "decode_chunks", lambda model, processor, chunks, **options:
                        seen.append(chunks) or real_decode(model, processor, chunks, **options))
    out = tmp_path / "flat.tsv"
    result = evaluate_replaced_f0(run, tts_corpus, "median", split="test", threads=1, cache_dir=tmp_path / "cache",
                                  out=out)
    assert result["utterances"] == 3 and result["f0_replacement"] == "median" and 0 <= result["cer"]
    errors = per_utterance_errors(out)
    assert sum(errors["char_errors"]) / sum(errors["chars"]) == result["cer"]
    for pieces in seen[0]:  # what the model was given: one flat f0 per utterance, on its own voicing
        for piece in pieces:
            voiced = piece["voiced"] > 0.5
            assert voiced.any() and np.unique(piece["f0"][voiced]).size == 1 and np.all(piece["f0"][~voiced] == 0)
