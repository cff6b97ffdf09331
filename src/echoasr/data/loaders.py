"""Loaders for what users have: manifests, Hugging Face audiofolder directories and datasets,
and the LibriSpeech layout. :func:`load_dataset_any` tells them apart.

Hugging Face ``datasets.Audio`` decoding needs torchcodec, which does not work on these machines:
audio columns are read undecoded (``Audio(decode=False)``) and decoded with soundfile.
"""

from __future__ import annotations

import csv
import json
import logging
import os
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from echoasr.data.manifest import PATH_COLUMNS, SPEAKER_COLUMNS, TEXT_COLUMNS, read_manifest, rows_to_utterances
from echoasr.data.records import Utterance, keep_usable, resample
from echoasr.errors import EchoError

log = logging.getLogger(__name__)

MANIFEST_SUFFIXES = (".tsv", ".jsonl", ".json")
AUDIOFOLDER_METADATA = ("metadata.csv", "metadata.jsonl")
AUDIO_SUFFIXES = (".flac", ".wav")
HF_SAVED_MARKERS = ("dataset_info.json", "dataset_dict.json", "state.json")


def load_dataset_any(
    source: Any, split: str | None = None, *, check_audio: bool = True, max_duration: float | None = None
) -> list[Utterance]:
    """Load utterances from whatever ``source`` is:

    - a ``datasets.Dataset`` / ``DatasetDict`` object;
    - a manifest file (``.tsv``, ``.jsonl``);
    - a folder holding ``<split>.tsv``/``.jsonl`` (a corpus from ``echoasr data synth``), a
      ``metadata.csv``/``.jsonl`` (audiofolder, also in a ``<split>/`` subfolder), ``*.trans.txt``
      files (LibriSpeech), or a dataset saved with ``save_to_disk``;
    - otherwise a Hugging Face Hub name (needs the network or a filled cache).
    """
    options = {"check_audio": check_audio, "max_duration": max_duration}
    if _is_hf_dataset(source):
        return load_hf_dataset(source, split=split, max_duration=max_duration)
    path = Path(os.path.expanduser(os.fspath(source)))
    if path.is_file():
        if path.name in AUDIOFOLDER_METADATA:
            return load_audiofolder(path.parent, **options)
        return read_manifest(path, **options)
    if path.is_dir():
        if split is not None:
            for suffix in MANIFEST_SUFFIXES[:2]:
                if (path / f"{split}{suffix}").is_file():
                    return read_manifest(path / f"{split}{suffix}", **options)
        if any((path / name).is_file() for name in AUDIOFOLDER_METADATA) or _audiofolder_splits(path):
            return load_audiofolder(path, split=split, **options)
        if any((path / name).is_file() for name in HF_SAVED_MARKERS):
            import datasets

            return load_hf_dataset(datasets.load_from_disk(str(path)), split=split, max_duration=max_duration)
        librispeech_root = path / split if split and (path / split).is_dir() else path
        if next(librispeech_root.rglob("*.trans.txt"), None) is not None:
            return load_librispeech(librispeech_root, **options)
        manifests = sorted(p.name for p in path.iterdir() if p.suffix in MANIFEST_SUFFIXES[:2])
        hint = f"; pass a split ({', '.join(manifests)})" if manifests else ""
        raise EchoError("no dataset layout recognised (manifest, audiofolder metadata, LibriSpeech "
                        f"*.trans.txt or a saved Hugging Face dataset){hint}", path)
    name = os.fspath(source)
    if name.startswith((".", "/", "~")) or name.count("/") > 1 or path.suffix in MANIFEST_SUFFIXES:
        raise EchoError("no such file or folder", path)
    return _load_hub_dataset(name, split, max_duration)


def load_audiofolder(
    directory: str | os.PathLike, split: str | None = None, *, check_audio: bool = True,
    max_duration: float | None = None,
) -> list[Utterance]:
    """A Hugging Face ``audiofolder``: ``metadata.csv`` (or ``.jsonl``) with ``file_name`` and a
    transcript column (``transcription``, ``text``, ``sentence``), paths relative to it."""
    directory = Path(directory)
    folder = directory
    if split is not None and (directory / split).is_dir():
        folder = directory / split
    elif not any((directory / name).is_file() for name in AUDIOFOLDER_METADATA):
        splits = _audiofolder_splits(directory)
        if len(splits) != 1:
            raise EchoError(f"audiofolder with splits {', '.join(splits) or 'none'}: choose one", directory)
        folder = directory / splits[0]
    metadata = next((folder / name for name in AUDIOFOLDER_METADATA if (folder / name).is_file()), None)
    if metadata is None:
        raise EchoError("no metadata.csv or metadata.jsonl", folder)
    skipped: Counter = Counter()
    if metadata.suffix == ".csv":
        with open(metadata, encoding="utf-8", errors="replace", newline="") as handle:
            rows = list(csv.DictReader(handle))
    else:
        rows = []
        for line in metadata.read_text(encoding="utf-8", errors="replace").splitlines():
            try:
                rows.append(json.loads(line)) if line.strip() else None
            except ValueError:
                skipped["malformed rows"] += 1
    candidates = rows_to_utterances(rows, folder.absolute(), skipped)
    return keep_usable(candidates, metadata, check_audio=check_audio, max_duration=max_duration, skipped=skipped)


def load_librispeech(
    directory: str | os.PathLike, *, check_audio: bool = True, max_duration: float | None = None
) -> list[Utterance]:
    """The LibriSpeech layout: ``<speaker>/<chapter>/<speaker>-<chapter>.trans.txt`` with lines
    ``<id> <TRANSCRIPT>`` beside ``<id>.flac`` (or ``.wav``)."""
    directory = Path(directory)
    skipped: Counter = Counter()

    def candidates() -> Iterator[Utterance]:
        for transcript in sorted(directory.absolute().rglob("*.trans.txt")):
            for line in transcript.read_text(encoding="utf-8", errors="replace").splitlines():
                utterance_id, _, text = line.strip().partition(" ")
                if not utterance_id:
                    continue
                audio = next((transcript.parent / f"{utterance_id}{s}" for s in AUDIO_SUFFIXES
                              if (transcript.parent / f"{utterance_id}{s}").is_file()),
                             transcript.parent / f"{utterance_id}{AUDIO_SUFFIXES[0]}")
                yield Utterance(utterance_id, text, utterance_id.split("-")[0], path=str(audio))

    return keep_usable(candidates(), directory, check_audio=check_audio, max_duration=max_duration, skipped=skipped)


def load_hf_dataset(
    dataset: Any, split: str | None = None, *, audio_column: str | None = None,
    text_column: str | None = None, speaker_column: str | None = None, max_duration: float | None = None,
) -> list[Utterance]:
    """Any ``datasets`` Dataset (or DatasetDict with ``split``) with an audio and a text column."""
    import datasets

    if isinstance(dataset, (datasets.DatasetDict, dict)):
        names = list(dataset)
        if split is None and len(names) != 1:
            raise EchoError(f"the dataset has splits {', '.join(names)}: choose one")
        if (split or names[0]) not in dataset:
            raise EchoError(f"no split {split!r} (splits: {', '.join(names)})")
        dataset = dataset[split or names[0]]
    columns = dataset.column_names
    audio_column = audio_column or _audio_column(dataset)
    text_column = text_column or next((c for c in TEXT_COLUMNS if c in columns), None)
    speaker_column = speaker_column or next((c for c in SPEAKER_COLUMNS if c in columns), None)
    if audio_column is None or text_column is None or audio_column not in columns or text_column not in columns:
        raise EchoError(f"need an audio and a text column; the dataset has {', '.join(columns)}")
    if isinstance(dataset.features[audio_column], datasets.Audio):
        dataset = dataset.cast_column(audio_column, datasets.Audio(decode=False))
    source = f"dataset {dataset.info.dataset_name or ''}".strip()
    skipped: Counter = Counter()

    def candidates() -> Iterator[Utterance]:
        for index, row in enumerate(dataset):
            audio = _hf_audio(row[audio_column])
            if audio is None:
                skipped["rows without audio"] += 1
                continue
            path, data = audio
            yield Utterance(
                str(row.get("id") or index), str(row[text_column] or ""),
                str(row[speaker_column]) if speaker_column else "", path=path, audio=data,
            )

    return keep_usable(candidates(), source, check_audio=True, max_duration=max_duration, skipped=skipped)


def _hf_audio(value: Any) -> tuple[str | None, np.ndarray | bytes | None] | None:
    """(path, in-memory audio) from an undecoded Audio value, a path string or a decoded dict."""
    if isinstance(value, str):
        return value, None
    if not isinstance(value, dict):
        return None
    if value.get("array") is not None:
        array = np.asarray(value["array"], dtype=np.float32)
        array = array.mean(axis=0) if array.ndim == 2 else array  # datasets stores (channels, samples)
        return None, resample(array, int(value.get("sampling_rate") or 16000))
    if value.get("bytes"):
        return value.get("path"), bytes(value["bytes"])
    if value.get("path"):
        return value["path"], None
    return None


def _audio_column(dataset: Any) -> str | None:
    import datasets

    for name, feature in dataset.features.items():
        if isinstance(feature, datasets.Audio):
            return name
    return next((c for c in PATH_COLUMNS if c in dataset.column_names), None)


def _audiofolder_splits(directory: Path) -> list[str]:
    return sorted(
        child.name for child in directory.iterdir()
        if child.is_dir() and any((child / name).is_file() for name in AUDIOFOLDER_METADATA)
    )


def _is_hf_dataset(source: Any) -> bool:
    module = type(source).__module__ or ""
    return module.startswith("datasets")


def _load_hub_dataset(name: str, split: str | None, max_duration: float | None) -> list[Utterance]:
    import datasets

    try:
        dataset = datasets.load_dataset(name, split=split)
    except Exception as error:  # the hub raises many kinds; the user needs the message, not a trace
        message = f"not a local dataset, and loading it from the Hugging Face Hub failed: {error}"
        raise EchoError(message, name) from None
    return load_hf_dataset(dataset, split=split, max_duration=max_duration)
