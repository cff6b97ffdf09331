"""Dev WER/CER during training score against the raw transcripts, not labels decoded back."""

import numpy as np
import pytest
from transformers import EvalPrediction

from echoasr.text.tokenizers import CharTokenizer
from echoasr.training import metrics_function


def test_dev_metrics_use_raw_transcripts_in_loader_order():
    tokenizer = CharTokenizer(list("abcdefghijklmnopqrstuvwxyz '"))  # no "é": it becomes unk
    transcripts = ["the café", "a dog", "no cats"]
    hypotheses = ["the caf", "a dog", "no cat"]  # the model cannot write "é"
    order = [2, 0, 1]  # the Trainer's loader runs longest first, not in dataset order
    width = 12

    def padded(rows, value):
        return np.array([row + [value] * (width - len(row)) for row in rows])

    labels = padded([tokenizer.encode(transcripts[i]) + [tokenizer.eos_id] for i in order], -100)
    predictions = padded([tokenizer.encode(hypotheses[i]) + [tokenizer.eos_id] for i in order], 0)
    metrics = metrics_function(tokenizer, transcripts)(EvalPrediction(predictions=predictions, label_ids=labels))
    # Word errors: "caf" for "café", "cat" for "cats": 2 of 6 reference words; characters: the
    # missing "é" and "s", 2 of 20 (a label round trip drops "é": 1 word error, 1 of 19 characters).
    assert metrics["wer"] == pytest.approx(2 / 6)
    assert metrics["cer"] == pytest.approx(2 / 20)
