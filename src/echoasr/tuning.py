"""Tuning the LM weight, the word bonus and the attention-rescoring weight on a development set.

A small grid: every (LM weight, word bonus) pair with attention rescoring at weight 1, then the
rescoring weight at the best pair. Features are extracted once; the WER of each point is logged and
returned. The best settings go to ``lm.json`` beside the model weights, where ``evaluate`` and
``transcribe`` find them. Tune on a development set only, never on the test set you report.

A model whose LM rescores the attention n-best (:func:`echoasr.decoding.rescores_attention_nbest`)
is decoded once: the weights only re-rank each utterance's n-best, so a finer grid costs nothing,
and it includes LM weight 0 (the search alone). There is no attention-rescoring weight then.
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
# n-best rescoring (natural-log LM scores): LM weight 0 first, so that a tie keeps the search alone
NBEST_LM_WEIGHTS = (0.0, 0.1, 0.2, 0.3, 0.5, 0.75, 1.0, 1.5, 2.0)
NBEST_WORD_BONUSES = (-1.0, -0.5, 0.0, 0.5, 1.0, 1.5, 2.0)
NBEST_SEARCH = "attention n-best rescoring"  # lm.json's "search" for such a model


def tune(model_path: str | os.PathLike, data: str | os.PathLike, lm: str | os.PathLike, *, split: str | None = None,
         limit: int | None = None, lm_weights=None, word_bonuses=None,
         rescore_weights=RESCORE_WEIGHTS, save: bool = True, cache_dir: str | os.PathLike | None = None,
         threads: int | None = None, progress: bool = True) -> dict[str, Any]:
    """Grid-search the LM settings on ``data`` (at most ``limit`` utterances, a fixed random
    sample) for ``lm``, an ARPA file or ``"default"`` (the general English model); returns the best
    settings, their WER and the grid, and saves them unless ``save`` is off. ``lm_weights`` and
    ``word_bonuses`` None: the grid of the model's LM search (CTC word search, or n-best rescoring)."""
    from echoasr.data import load_dataset_any
    from echoasr.data.featurize import SpeechDataset, extract_features
    from echoasr.decoding import (DEFAULT_LM, DecodingOptions, SpeechDecoder, best_candidate, decode_transcripts,
                                  lm_reference, write_lm_config)
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
        rescoring = decoder.lm_scorer is not None
        if rescoring:  # decoded once; each grid point re-ranks the n-best
            nbest_lists = decode_transcripts(model, processor, dataset, options, batch_frames=DEFAULT_BATCH_FRAMES,
                                             progress=progress, decoder=decoder)
        grid = []

        def measure(lm_weight: float, word_bonus: float, rescore_weight: float | None = None) -> float:
            if rescoring:
                texts = [best_candidate(t.candidates, lm_weight, word_bonus).text if t.candidates else t.text
                         for t in nbest_lists]
            else:
                decoder.set_lm_weights(lm_weight, word_bonus)
                options.rescore_weight = rescore_weight
                texts = [t.text for t in decode_transcripts(model, processor, dataset, options, progress=False,
                                                            batch_frames=DEFAULT_BATCH_FRAMES, decoder=decoder)]
            result = score(references, texts)
            point = {"lm_weight": lm_weight, "word_bonus": word_bonus}
            if rescore_weight is not None:
                point["rescore_weight"] = rescore_weight
            grid.append({**point, "wer": round(result["wer"], 4), "insertions": result["insertions"]})
            log.info("%s: WER %.2f%%", " ".join(f"{name} {value:g}" for name, value in point.items()),
                     100 * result["wer"])
            return result["wer"]

        if lm_weights is None:
            lm_weights = NBEST_LM_WEIGHTS if rescoring else LM_WEIGHTS
        if word_bonuses is None:
            word_bonuses = NBEST_WORD_BONUSES if rescoring else WORD_BONUSES
        first_rescore = None if rescoring else 1.0
        best = min(((measure(w, b, first_rescore), w, b) for w in lm_weights for b in word_bonuses),
                   key=lambda x: x[0])
        wer, lm_weight, word_bonus = best
        if not rescoring:
            rescored = min(((measure(lm_weight, word_bonus, r), r) for r in rescore_weights if r != 1.0),
                           key=lambda x: x[0], default=(wer, 1.0))
            wer, rescore_weight = min([(wer, 1.0), rescored], key=lambda x: x[0])
    settings = {"lm": saved_lm, "lm_weight": lm_weight, "word_bonus": word_bonus}
    settings.update({"search": NBEST_SEARCH} if rescoring else {"rescore_weight": rescore_weight})
    settings.update({
        "tuned_on": str(data) if split is None else f"{data} ({split})", "utterances": len(kept),
        "dev_wer": round(wer, 4), "grid": grid,
    })
    if save:
        settings["saved"] = str(write_lm_config(resolve_model_dir(model_path), settings))
    return settings
