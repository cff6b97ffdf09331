"""Manifests: TSV with a header row, or JSON lines; at least ``path`` and ``text`` per row.

Relative paths resolve against the manifest's folder. Common alternative column names are
accepted (``audio_filepath`` as in NeMo, ``file_name``/``transcription`` as in Hugging Face
audiofolder, ``sentence`` as in Common Voice).
"""

from __future__ import annotations

import csv
import json
import logging
import os
from collections import Counter
from collections.abc import Iterable, Iterator
from pathlib import Path

from echoasr import atomic
from echoasr.data.records import Utterance, keep_usable
from echoasr.errors import EchoError

log = logging.getLogger(__name__)

PATH_COLUMNS = ("path", "audio_filepath", "file_name", "audio", "file", "wav")
TEXT_COLUMNS = ("text", "transcription", "transcript", "sentence", "normalized_text")
SPEAKER_COLUMNS = ("speaker", "speaker_id", "client_id")
TSV_COLUMNS = ("path", "text", "speaker", "voice", "duration")


def read_manifest(
    path: str | os.PathLike, *, check_audio: bool = True, max_duration: float | None = None
) -> list[Utterance]:
    """Read a TSV or JSONL manifest; unusable rows are skipped (see :func:`keep_usable`)."""
    path = Path(path)
    if not path.is_file():
        raise EchoError("manifest not found", path)
    skipped: Counter = Counter()
    rows = _jsonl_rows(path, skipped) if path.suffix in (".jsonl", ".json") else _tsv_rows(path, skipped)
    candidates = rows_to_utterances(rows, path.parent.absolute(), skipped)
    return keep_usable(candidates, path, check_audio=check_audio, max_duration=max_duration, skipped=skipped)


def rows_to_utterances(rows: Iterable[dict], base: Path, skipped: Counter) -> Iterator[Utterance]:
    """Map rows (dicts of column -> value) to utterances; rows without a path are counted."""
    for row in rows:
        audio_path = _first(row, PATH_COLUMNS)
        if not audio_path:
            skipped["rows without a path"] += 1
            continue
        full = os.path.normpath(os.path.join(base, os.path.expanduser(audio_path)))
        relative = os.path.relpath(full, base)
        utterance_id = str(row.get("id") or os.path.splitext(relative)[0])
        yield Utterance(
            utterance_id,
            str(_first(row, TEXT_COLUMNS) or ""),
            str(_first(row, SPEAKER_COLUMNS) or ""),
            _float_or_none(row.get("duration")),
            path=full,
            voice=str(row.get("voice") or ""),
        )


def write_manifest(path: str | os.PathLike, utterances: Iterable[Utterance]) -> None:
    """Write utterances as TSV (or JSONL for a ``.jsonl`` path), paths relative to its folder."""
    path = Path(path)
    folder = path.parent.resolve()
    rows = []
    for utterance in utterances:
        if utterance.path is None:
            raise EchoError(f"utterance {utterance.id} has no file to put in a manifest", path)
        rows.append({
            "path": os.path.relpath(Path(utterance.path).resolve(), folder),
            "text": " ".join(utterance.text.split()),  # no tabs or newlines inside a field
            "speaker": utterance.speaker,
            "voice": utterance.voice,
            "duration": "" if utterance.duration is None else f"{utterance.duration:.3f}",
        })
    if path.suffix == ".jsonl":
        text = "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows)
    else:
        lines = ["\t".join(TSV_COLUMNS)] + ["\t".join(str(row[c]) for c in TSV_COLUMNS) for row in rows]
        text = "\n".join(lines) + "\n"
    atomic.write_text(path, text)


def _tsv_rows(path: Path, skipped: Counter) -> Iterator[dict]:
    with open(path, encoding="utf-8", errors="replace", newline="") as handle:
        reader = csv.reader(handle, delimiter="\t", quoting=csv.QUOTE_NONE)
        header = next(reader, None)
        if header is None or not set(PATH_COLUMNS) & set(header) or not set(TEXT_COLUMNS) & set(header):
            raise EchoError(
                f"a manifest needs a header row with a path column ({'/'.join(PATH_COLUMNS)}) and a text "
                f"column ({'/'.join(TEXT_COLUMNS)}); found {header}", path
            )
        for fields in reader:
            if not fields or fields == [""]:
                continue
            if len(fields) != len(header):
                skipped["malformed rows"] += 1
                continue
            yield dict(zip(header, fields, strict=True))


def _jsonl_rows(path: Path, skipped: Counter) -> Iterator[dict]:
    with open(path, encoding="utf-8", errors="replace") as handle:
        for line in handle:
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except ValueError:
                row = None
            if not isinstance(row, dict):
                skipped["malformed rows"] += 1
                continue
            yield row


def _first(row: dict, names: tuple[str, ...]) -> str | None:
    for name in names:
        value = row.get(name)
        if isinstance(value, str) and value.strip():
            return value.strip()
    return None


def _float_or_none(value) -> float | None:
    try:
        return float(value)
    except (TypeError, ValueError):
        return None
