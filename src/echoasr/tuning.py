"""Tuning the LM weight, the word bonus and the attention-rescoring weight on a development set.

A small grid: every (LM weight, word bonus) pair with attention rescoring at weight 1, then the
rescoring weight at the best pair. Features are extracted once; the WER of each point is logged and
returned. The best settings go to ``lm.json`` beside the model weights, where ``evaluate`` and
``transcribe`` find them. Tune on a development set only, never on the test set you report.
"""

from __future__ import annotations

import logging
import os
import random
from pathlib import Path
from typing import Any

from echoasr.errors import EchoError

log = logging.getLogger(__name__)

LM_WEIGHTS = (0.25, 0.5, 1.0, 1.5)
WORD_BONUSES = (-1.0, 0.0, 1.0, 2.0)
RESCORE_WEIGHTS = (0.0, 0.5, 1.0, 2.0)


def tune(model_path: str | os.PathLike, data: str | os.PathLike, lm: str | os.PathLike, *, split: str | None = None,
         limit: int | None = None, lm_weights=LM_WEIGHTS, word_bonuses=WORD_BONUSES,
         rescore_weights=RESCORE_WEIGHTS, save: bool = True, cache_dir: str | os.PathLike | None = None,
         threads: int | None = None, progress: bool = True) -> dict[str, Any]:
    """Grid-search the LM settings on ``data`` (at most ``limit`` utterances, a fixed random
    sample) for ``lm``, an ARPA file or ``"default"`` (the general English model); returns the best
    settings, their WER and the grid, and saves them unless ``save`` is off."""
    from echoasr.data import load_dataset_any
    from echoasr.data.featurize import SpeechDataset, extract_features
    from echoasr.decoding import (DEFAULT_LM, DecodingOptions, SpeechDecoder, decode_transcripts, lm_reference,
                                  write_lm_config)
    from echoasr.loading import load_pretrained
    from echoasr.processor import resolve_model_dir
    from echoasr.runtime import DEFAULT_BATCH_FRAMES, torch_threads
    from echoasr.scoring import score

    # Saved by name (the general English LM) or relative to the model folder, so that the settings
    # hold once the folder is copied to another machine (and in an export).
    saved_lm = lm_reference(lm, resolve_model_dir(model_path))
    if str(lm) == DEFAULT_LM:
        from echoasr.lm.arpa import default_lm

        lm = default_lm()
    else:
        lm = Path(lm)
        if not lm.is_file():
            raise EchoError("no such language model file", lm)
    with torch_threads(threads):
        model, processor = load_pretrained(model_path)
        utterances = load_dataset_any(data, split=split, max_duration=processor.max_duration)
        if limit and len(utterances) > limit:
            utterances = random.Random(0).sample(utterances, limit)
        arrays, _ = extract_features(utterances, processor.features, processor.settings, cache_dir=cache_dir,
                                     progress=progress, description="features")
        kept = [(u, a) for u, a in zip(utterances, arrays, strict=True) if a is not None]
        if not kept:
            raise EchoError("no utterance could be decoded", data)
        dataset = SpeechDataset([a for _, a in kept])
        references = [u.text for u, _ in kept]
        options = DecodingOptions(lm=str(lm.resolve()))
        decoder = SpeechDecoder(model, processor, options)
        grid = []

        def measure(lm_weight: float, word_bonus: float, rescore_weight: float) -> float:
            decoder.set_lm_weights(lm_weight, word_bonus)
            options.rescore_weight = rescore_weight
            transcripts = decode_transcripts(model, processor, dataset, options, batch_frames=DEFAULT_BATCH_FRAMES,
                                             progress=False, decoder=decoder)
            result = score(references, [t.text for t in transcripts])
            grid.append({"lm_weight": lm_weight, "word_bonus": word_bonus, "rescore_weight": rescore_weight,
                         "wer": round(result["wer"], 4), "insertions": result["insertions"]})
            log.info("lm_weight %g word_bonus %g rescore %g: WER %.2f%%", lm_weight, word_bonus, rescore_weight,
                     100 * result["wer"])
            return result["wer"]

        best = min(((measure(w, b, 1.0), w, b) for w in lm_weights for b in word_bonuses), key=lambda x: x[0])
        _, lm_weight, word_bonus = best
        rescored = min(((measure(lm_weight, word_bonus, r), r) for r in rescore_weights if r != 1.0),
                       key=lambda x: x[0], default=(best[0], 1.0))
        wer, rescore_weight = min([(best[0], 1.0), rescored], key=lambda x: x[0])
    settings = {
        "lm": saved_lm, "lm_weight": lm_weight, "word_bonus": word_bonus, "rescore_weight": rescore_weight,
        "tuned_on": str(data) if split is None else f"{data} ({split})", "utterances": len(kept),
        "dev_wer": round(wer, 4), "grid": grid,
    }
    if save:
        settings["saved"] = str(write_lm_config(resolve_model_dir(model_path), settings))
    return settings
