"""Manipulation check: does a pitch configuration use the f0 it is given?

Each pitch configuration is evaluated again with its f0 replaced at test time, and compared with
its own unmodified evaluation (the same trained runs, so the comparison is paired by run):

* ``shuffled``: every utterance gets another utterance's f0 contour (a derangement of the test
  set, each utterance its own donor never), stretched to its own voiced frames;
* ``median``: every voiced frame gets the median voiced f0 of its group: the utterance (default)
  or the speaker (``groups``: one speaker id per utterance), i.e. a flat contour at the right level.

What stays consistent: an utterance keeps its own voicing (``voiced``) and f0 stays 0 exactly on
its unvoiced frames, so only the f0 values change, not where the voice is; the accumulated phase
(``phase``, when present) is recomputed from the new f0 (:func:`echoasr.features.phase.accumulated_phase`).
What does not change: ``mel``, ``harmonic``, ``aperiodic`` and ``waveform`` were computed from the
audio (WORLD's harmonic envelope and aperiodicity with the original f0 as an analysis input) and
still carry the original pitch implicitly; the check removes the explicit f0 channel the model
reads (its f0 stem, the pitch-warped rotary phase, the pitch bias), not the pitch audible in the
spectrum. A model that reads no f0 gives identical output (tests/test_manipulation.py).

Use :func:`replace_f0` on per-utterance feature dicts (numpy, as the feature cache gives them),
:func:`replace_f0_batch` on a padded batch of tensors, and :func:`evaluate_replaced_f0` to score
a trained run on a test set with replaced f0.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from echoasr.features.phase import PHASE_REFERENCE_HZ, accumulated_phase

log = logging.getLogger(__name__)

F0_REPLACEMENTS = ("shuffled", "median")


def _voiced_mask(features: Mapping[str, np.ndarray]) -> np.ndarray:
    return (np.asarray(features["voiced"]) > 0.5) & (np.asarray(features["f0"]) > 0)


def _stretched(values: np.ndarray, count: int) -> np.ndarray:
    """``values`` resampled to ``count`` points by linear interpolation (the contour's shape kept)."""
    if count == 0:
        return np.zeros(0)
    if values.size == 1:
        return np.full(count, values[0])
    return np.interp(np.linspace(0, values.size - 1, count), np.arange(values.size), values)


def _derangement(count: int, rng: np.random.Generator) -> np.ndarray:
    """donor[i] != i for every i (one random cycle through the items), for count >= 2."""
    order = rng.permutation(count)
    donors = np.empty(count, dtype=int)
    donors[order] = np.roll(order, -1)
    return donors


def replace_f0(utterances: Sequence[Mapping[str, np.ndarray]], mode: str, *, groups: Sequence[str] | None = None,
               seed: int = 0, phase_reference_hz: float = PHASE_REFERENCE_HZ) -> list[dict[str, np.ndarray]]:
    """Copies of per-utterance feature dicts (``f0`` and ``voiced`` (T,), other streams as they are)
    with f0 replaced by ``mode`` (one of ``F0_REPLACEMENTS``, see the module). ``groups``: for
    ``median``, the group of each utterance (a speaker id) whose pooled median is used; default:
    each utterance its own group. Utterances without voiced frames are left as they are, and
    donate nothing when shuffled."""
    if mode not in F0_REPLACEMENTS:
        raise ValueError(f"f0 replacement must be one of {F0_REPLACEMENTS}, not {mode!r}")
    if groups is not None and len(groups) != len(utterances):
        raise ValueError("groups needs one entry per utterance")
    masks = [_voiced_mask(u) for u in utterances]
    contours = [np.asarray(u["f0"], dtype=np.float64)[mask] for u, mask in zip(utterances, masks, strict=True)]
    replacements: list[np.ndarray | None] = [None] * len(utterances)
    if mode == "shuffled":
        donors = [i for i, contour in enumerate(contours) if contour.size]
        if len(donors) < 2:
            log.warning("f0 shuffle: fewer than two utterances with voiced frames; f0 left unchanged")
        else:
            for receiver, donor in zip(donors, np.array(donors)[_derangement(len(donors), np.random.default_rng(seed))],
                                       strict=True):
                replacements[receiver] = _stretched(contours[donor], contours[receiver].size)
    else:
        keys = list(range(len(utterances))) if groups is None else list(groups)
        pooled: dict[Any, list[np.ndarray]] = {}
        for key, contour in zip(keys, contours, strict=True):
            pooled.setdefault(key, []).append(contour)
        medians = {key: np.median(np.concatenate(parts)) for key, parts in pooled.items() if sum(p.size for p in parts)}
        for index, (key, contour) in enumerate(zip(keys, contours, strict=True)):
            if contour.size:
                replacements[index] = np.full(contour.size, medians[key])
    replaced = []
    for features, mask, values in zip(utterances, masks, replacements, strict=True):
        copy = dict(features)
        if values is not None:
            f0 = np.zeros_like(np.asarray(features["f0"]))
            f0[mask] = values
            copy["f0"] = f0
            if "phase" in features:  # the phase stream follows the f0 it is accumulated from
                voiced = np.asarray(features["voiced"])
                copy["phase"] = accumulated_phase(f0, voiced, phase_reference_hz).astype(np.asarray(features["phase"]).dtype)
        replaced.append(copy)
    return replaced


def replace_f0_batch(features: dict, lengths, mode: str, *, groups: Sequence[str] | None = None, seed: int = 0,
                     phase_reference_hz: float = PHASE_REFERENCE_HZ) -> dict:
    """:func:`replace_f0` on a right-padded batch of tensors (``f0``, ``voiced``, ``phase`` (B, T);
    ``lengths`` (B,)): shuffled within the batch; padding and the other streams untouched."""
    import torch

    count = int(lengths.shape[0])
    utterances = []
    for index in range(count):
        length = int(lengths[index])
        utterances.append({name: features[name][index, :length].detach().cpu().numpy()
                           for name in ("f0", "voiced", "phase") if name in features})
    replaced = replace_f0(utterances, mode, groups=groups, seed=seed, phase_reference_hz=phase_reference_hz)
    result = dict(features)
    for name in ("f0", "phase"):
        if name in features:
            tensor = features[name].clone()
            for index, utterance in enumerate(replaced):
                length = int(lengths[index])
                tensor[index, :length] = torch.as_tensor(utterance[name], dtype=tensor.dtype, device=tensor.device)
            result[name] = tensor
    return result


def _replace_in_chunks(chunks: Sequence[Sequence[dict]], mode: str, speakers: Sequence[str] | None, seed: int,
                       phase_reference_hz: float) -> list[list[dict]]:
    """The evaluation's chunks (a list of feature dicts per recording) with f0 replaced: a long
    recording's chunks share the recording's (or speaker's) median and are shuffled as units."""
    owners = [index for index, pieces in enumerate(chunks) for _ in pieces]
    pieces = [piece for parts in chunks for piece in parts]
    groups = [speakers[o] if speakers is not None else str(o) for o in owners] if mode == "median" else None
    replaced = replace_f0(pieces, mode, groups=groups, seed=seed, phase_reference_hz=phase_reference_hz)
    regrouped: list[list[dict]] = [[] for _ in chunks]
    for owner, piece in zip(owners, replaced, strict=True):
        regrouped[owner].append(piece)
    return regrouped


def evaluate_replaced_f0(model_path: str | os.PathLike, data: str | os.PathLike, mode: str, *,
                         split: str | None = None, by_speaker: bool = False, beams: int = 1,
                         ctc_weight: float | None = None, threads: int | None = None,
                         cache_dir: str | os.PathLike | None = None, seed: int = 0,
                         out: str | os.PathLike | None = None, progress: bool = False) -> dict[str, Any]:
    """Score the model at ``model_path`` on ``data`` (manifest, or corpus folder + ``split``) with
    its f0 replaced by ``mode`` (``median``: the utterance's, or with ``by_speaker`` the speaker's);
    no LM, as the experiment runner evaluates. Returns :func:`echoasr.evaluation.score`'s metrics
    plus ``utterances``, ``f0_replacement`` and ``hypotheses`` (the TSV written to ``out``, which
    :func:`echoasr.experiments.runner.per_utterance_errors` reads)."""
    from echoasr.decoding import resolve_options
    from echoasr.evaluation import (decode_chunks, load_test_set, model_inputs, score, torch_threads,
                                    write_hypotheses)
    from echoasr.loading import load_pretrained

    utterances = load_test_set(data, split)
    with torch_threads(threads):
        model, processor = load_pretrained(model_path)
        if not model.config.uses_pitch and "f0" not in model.config.features:
            log.info("%s reads no f0: its output cannot change (evaluated anyway)", model_path)
        chunks, failed = model_inputs(utterances, processor, cache_dir=cache_dir, progress=progress)
        speakers = [u.speaker for u in utterances] if by_speaker else None
        chunks = _replace_in_chunks(chunks, mode, speakers, seed, processor.settings.phase_reference_hz)
        options = resolve_options(model_path, "none", beams=beams, ctc_weight=ctc_weight)
        hypotheses = decode_chunks(model, processor, chunks, beams=beams, ctc_weight=ctc_weight, progress=progress,
                                   decoding=options)
    name = Path(data).stem if split is None else f"{Path(data).name}-{split}"
    target = Path(out) if out else Path(model_path) / "eval" / f"{name}.f0-{mode}.tsv"
    write_hypotheses(target, utterances, hypotheses, failed, [len(pieces) for pieces in chunks])
    label = f"{mode} (by speaker)" if mode == "median" and by_speaker else mode
    return {**score([u.text for u in utterances], hypotheses), "utterances": len(utterances),
            "f0_replacement": label, "hypotheses": str(target)}
