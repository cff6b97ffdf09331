"""Batching for training and decoding: padding with true lengths, SpecAugment, length-grouped batches.

An item is ``{"features": {name: array (C, T) or (T,)}, "labels": [ids..., EOS]}`` (labels are
optional: decoding needs none). :class:`SpeechCollator` turns a list of items into the model's
inputs: ``features`` right-padded with zeros to the longest item, ``feature_lengths`` (B,) int64
true frame counts (the model builds every mask from them, never from the zeros), and ``labels``
padded with -100. With a :class:`SpecAugment` it masks time bands of every input stream (the same
frames in mel, f0, voiced, ...) and frequency bands of ``mel`` inside each utterance's length (for
the training loader only; evaluation uses a collator without it).

:class:`FrameBatchSampler` groups utterances of similar length into batches of at most
``max_frames`` padded frames (longest item x batch size), which keeps the work per step even and
padding small; the order is a deterministic function of the seed and epoch, so a resumed run
sees the same batches as an uninterrupted one.
:class:`ProcessSplitBatchSampler` cuts each of those batches into one piece per process for
multi-process training (``torchrun``), so N processes train on the batches of one.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import torch

LABEL_PAD = -100


@dataclass(frozen=True)
class SpecAugment:
    """SpecAugment-style masking of a log-mel batch (Park et al. 2019), without time warping.

    Per utterance: ``time_masks`` bands of up to ``time_width`` frames (and at most
    ``time_ratio`` of the utterance each), and ``freq_masks`` bands of up to ``freq_width`` mel
    bins, each width drawn uniformly from 0..max. Masked cells take the utterance's mean log-mel
    (what a fully masked region averages to, so the masks carry no level shift). Only frames
    inside the utterance's length are touched.

    :meth:`mask_streams` masks a whole feature dict consistently: the time bands drawn for ``mel``
    also cover every other stream on the same frame grid, so a masked stretch hides its pitch too
    (f0, voiced and phase become 0 there, i.e. unvoiced; other (C, T) streams take their mean).
    """

    time_masks: int = 2
    time_width: int = 40
    time_ratio: float = 0.1
    freq_masks: int = 2
    freq_width: int = 15

    def __call__(self, mel: torch.Tensor, lengths: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """Mask ``mel`` (B, C, T) in place and return it."""
        return self.mask_streams({"mel": mel}, lengths, generator)["mel"]

    def mask_streams(self, features: dict[str, torch.Tensor], lengths: torch.Tensor,
                     generator: torch.Generator | None = None) -> dict[str, torch.Tensor]:
        """Mask ``features`` in place (``mel`` (B, C, T) required): one set of time bands for every
        stream on mel's frame grid, frequency bands for mel only."""
        mel = features["mel"]
        batch, channels, frames = mel.shape
        valid = torch.arange(frames)[None] < lengths[:, None]  # (B, T)
        masked_time = _bands(lengths, self.time_masks, self.time_width, self.time_ratio, frames, generator) & valid
        full = torch.full((batch,), channels, dtype=torch.long)
        masked_freq = _bands(full, self.freq_masks, self.freq_width, 1.0, channels, generator)
        for name, stream in features.items():
            if stream.shape[-1] != frames:
                continue  # another time grid (waveform): not masked
            if stream.dim() == 2:  # f0, voiced, phase: masked frames become unvoiced
                stream.masked_fill_(masked_time, 0.0)
                continue
            mask = masked_time[:, None, :].expand_as(stream)
            if name == "mel":
                mask = mask | (masked_freq[:, :, None] & valid[:, None, :])
            fill = (stream * valid[:, None]).sum((1, 2)) / (lengths * stream.shape[1]).clamp_min(1)  # (B,)
            if mask.any():
                stream.masked_scatter_(mask, fill[:, None, None].expand_as(stream)[mask])
        return features


def _bands(sizes: torch.Tensor, count: int, max_width: int, ratio: float, extent: int,
           generator: torch.Generator | None) -> torch.Tensor:
    """(B, extent) bool: ``count`` random bands per row, each inside [0, sizes[b])."""
    batch = sizes.shape[0]
    if count <= 0 or max_width <= 0:
        return torch.zeros(batch, extent, dtype=torch.bool)
    limit = torch.minimum(torch.full_like(sizes, max_width), (sizes.float() * ratio).long())  # (B,)
    widths = (torch.rand(batch, count, generator=generator) * (limit[:, None] + 1).float()).long()
    starts = (torch.rand(batch, count, generator=generator) * (sizes[:, None] - widths + 1).clamp_min(1).float()).long()
    position = torch.arange(extent)[None, None, :]
    inside = (position >= starts[:, :, None]) & (position < (starts + widths)[:, :, None])
    return inside.any(1)


def normalize_utterances(features: torch.Tensor, lengths: torch.Tensor, eps: float = 1e-5) -> torch.Tensor:
    """Per-utterance, per-channel mean and variance normalisation (CMVN) of (B, C, T) over each
    utterance's valid frames, in place; padding stays zero."""
    valid = (torch.arange(features.shape[-1])[None] < lengths[:, None])[:, None, :]  # (B, 1, T)
    count = lengths[:, None, None].clamp_min(1).to(features.dtype)
    mean = (features * valid).sum(-1, keepdim=True) / count
    variance = (((features - mean) * valid) ** 2).sum(-1, keepdim=True) / count
    features.sub_(mean).div_(torch.sqrt(variance + eps)).mul_(valid)
    return features


class SpeechCollator:
    """Pad a list of items into the model's batch (see the module docstring).

    ``normalize``: feature names to normalise per utterance and channel (:func:`normalize_utterances`)
    before any masking; part of the model's input definition (the processor saves it).
    """

    def __init__(self, spec_augment: SpecAugment | None = None, normalize: tuple[str, ...] = ()):
        self.spec_augment = spec_augment
        self.normalize = tuple(normalize)

    def __call__(self, items: Sequence[dict]) -> dict:
        if not items:
            raise ValueError("cannot collate an empty batch")
        names = list(items[0]["features"])
        lengths = torch.tensor([item["features"][names[0]].shape[-1] for item in items], dtype=torch.long)
        frames = int(lengths.max())
        features = {}
        for name in names:
            first = items[0]["features"][name]
            batch = torch.zeros((len(items), *first.shape[:-1], frames), dtype=torch.float32)
            for row, item in enumerate(items):
                array = item["features"][name]
                batch[row, ..., : array.shape[-1]] = torch.as_tensor(np.asarray(array, dtype=np.float32))
            features[name] = batch
        for name in self.normalize:
            if name in features:
                normalize_utterances(features[name], lengths)
        if self.spec_augment is not None and "mel" in features:
            self.spec_augment.mask_streams(features, lengths)
        out = {"features": features, "feature_lengths": lengths}
        if "labels" in items[0]:
            width = max(len(item["labels"]) for item in items)
            labels = torch.full((len(items), width), LABEL_PAD, dtype=torch.long)
            for row, item in enumerate(items):
                labels[row, : len(item["labels"])] = torch.as_tensor(item["labels"], dtype=torch.long)
            out["labels"] = labels
        return out


class FrameBatchSampler(torch.utils.data.Sampler[list[int]]):
    """Batches of indices whose padded size (longest length x count) stays within ``max_frames``.

    The batches are cut once from the indices sorted by length (ESPnet's "numel" batching), so
    lengths within a batch are close and the number of batches is the same every epoch (the
    Trainer's resume arithmetic relies on that); ``shuffle`` then orders them randomly per epoch
    from ``seed`` and ``epoch``. Unshuffled, batches run from the longest utterances to the shortest.
    ``max_items`` caps the batch size (the attention decoder's cost grows with it too).
    """

    def __init__(self, lengths: Sequence[int], max_frames: int, *, shuffle: bool = True, seed: int = 0,
                 max_items: int | None = None):
        if max_frames <= 0:
            raise ValueError("max_frames must be positive")
        self.lengths = np.asarray(lengths, dtype=np.int64)
        self.shuffle = shuffle
        self.seed = seed
        self.epoch = 0
        self.batches = _cut(self.lengths, np.argsort(-self.lengths, kind="stable"), max_frames, max_items)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __iter__(self) -> Iterator[list[int]]:
        if not self.shuffle:
            return iter([list(batch) for batch in self.batches])
        order = np.random.default_rng([self.seed, self.epoch]).permutation(len(self.batches))
        return iter([list(self.batches[i]) for i in order])

    def __len__(self) -> int:
        return len(self.batches)


def _cut(lengths: np.ndarray, indices: np.ndarray, max_frames: int, max_items: int | None) -> list[list[int]]:
    """Cut indices sorted by decreasing length into batches within the frame budget."""
    batches, current, longest = [], [], 0
    for index in indices.tolist():
        length = int(lengths[index])
        full = max_items is not None and len(current) >= max_items
        if current and (full or max(longest, length) * (len(current) + 1) > max_frames):
            batches.append(current)
            current, longest = [], 0
        current.append(index)
        longest = max(longest, length)
    if current:
        batches.append(current)
    return batches


class ProcessSplitBatchSampler(torch.utils.data.Sampler[list[int]]):
    """Each batch of ``batch_sampler`` (the global batch) cut into ``processes`` consecutive
    pieces with utterance counts that differ by at most one, yielded piece after piece.

    Accelerate (``accelerator.prepare``) deals a batch sampler's batches to the processes in turn,
    batch i to process i mod N, so every process would train on whole batches of its own and N
    processes on N times the batch of one. Behind this sampler, process r gets piece r of every
    global batch instead: N processes take the same optimizer steps on the same batches as one
    process, and ``batch_frames`` keeps its meaning whatever the number of processes. A global
    batch with fewer utterances than processes gives the processes left over repeats of its
    utterances (every process needs a batch to take part in the step)."""

    def __init__(self, batch_sampler: FrameBatchSampler, processes: int):
        if processes < 1:
            raise ValueError("processes must be at least 1")
        self.batch_sampler = batch_sampler
        self.processes = processes

    def set_epoch(self, epoch: int) -> None:
        self.batch_sampler.set_epoch(epoch)

    def __iter__(self) -> Iterator[list[int]]:
        for batch in self.batch_sampler:
            yield from split_batch(batch, self.processes)

    def __len__(self) -> int:
        return len(self.batch_sampler) * self.processes


def split_batch(batch: list[int], parts: int) -> list[list[int]]:
    """``batch`` cut into ``parts`` consecutive pieces (sizes differ by at most one, larger first);
    with fewer items than parts, the missing pieces repeat items in turn."""
    if len(batch) < parts:
        return [[batch[part % len(batch)]] for part in range(parts)]
    size, extra = divmod(len(batch), parts)
    bounds = np.cumsum([0] + [size + (part < extra) for part in range(parts)])
    return [list(batch[bounds[part]:bounds[part + 1]]) for part in range(parts)]
