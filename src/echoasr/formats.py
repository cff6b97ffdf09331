"""Transcripts as users read them: plain text, JSON (words with times and confidences, n-best) and
subtitles (SubRip ``.srt``, WebVTT ``.vtt``).

Every format carries one text: the transcript's (the decoder times the text's own words, see
:mod:`echoasr.decoding`). Subtitle cues group consecutive words: a new cue starts when the text
would pass ``CUE_CHARACTERS`` characters, the cue would last more than ``CUE_SECONDS``, or the
speaker paused longer than ``CUE_PAUSE`` seconds. A transcript without word times (a model
without a CTC head) is one cue over the whole file.
"""

from __future__ import annotations

import json
from collections.abc import Sequence

from echoasr.decoding import Transcript
from echoasr.lm.decoding import Word

FORMATS = ("text", "json", "srt", "vtt")
CUE_CHARACTERS = 42
CUE_SECONDS = 5.0
CUE_PAUSE = 1.0


def timestamp(seconds: float, separator: str) -> str:
    """``HH:MM:SS<separator>mmm`` (SRT uses a comma, WebVTT a dot)."""
    milliseconds = max(0, round(seconds * 1000))
    hours, rest = divmod(milliseconds, 3_600_000)
    minutes, rest = divmod(rest, 60_000)
    secs, millis = divmod(rest, 1000)
    return f"{hours:02d}:{minutes:02d}:{secs:02d}{separator}{millis:03d}"


def cues(words: Sequence[Word]) -> list[tuple[float, float, str]]:
    """(start, end, text) subtitle cues from timed words."""
    groups: list[list[Word]] = []
    for word in words:
        if groups:
            current = groups[-1]
            text = " ".join(w.word for w in current) + " " + word.word
            if (len(text) <= CUE_CHARACTERS and word.end - current[0].start <= CUE_SECONDS
                    and word.start - current[-1].end <= CUE_PAUSE):
                current.append(word)
                continue
        groups.append([word])
    return [(g[0].start, g[-1].end, " ".join(w.word for w in g)) for g in groups]


def subtitle_cues(transcript: Transcript, duration: float | None = None) -> list[tuple[float, float, str]]:
    """Cues of the timed words; without word times, the text as one cue from 0 to ``duration``."""
    if transcript.words:
        return cues(transcript.words)
    return [(0.0, duration or 0.0, transcript.text)] if transcript.text else []


def to_srt(transcript: Transcript, duration: float | None = None) -> str:
    blocks = [f"{i}\n{timestamp(s, ',')} --> {timestamp(e, ',')}\n{text}\n"
              for i, (s, e, text) in enumerate(subtitle_cues(transcript, duration), start=1)]
    return "\n".join(blocks)


def to_vtt(transcript: Transcript, duration: float | None = None) -> str:
    blocks = [f"{timestamp(s, '.')} --> {timestamp(e, '.')}\n{text}\n"
              for s, e, text in subtitle_cues(transcript, duration)]
    return "WEBVTT\n\n" + "\n".join(blocks)


def to_json(path: str, transcript: Transcript, duration: float | None = None) -> str:
    document = {
        "path": path,
        "text": transcript.text,
        "duration": None if duration is None else round(duration, 3),
        "words": [{"word": w.word, "start": w.start, "end": w.end, "confidence": w.confidence}
                  for w in transcript.words],
        "nbest": [{"text": text, "score": score} for text, score in transcript.nbest],
    }
    return json.dumps(document, ensure_ascii=False)


def render(fmt: str, path: str, transcript: Transcript, duration: float | None = None) -> str:
    """One file's transcript in ``fmt`` (text: ``PATH<TAB>TEXT``; json: one line)."""
    if fmt == "text":
        return f"{path}\t{transcript.text}\n"
    if fmt == "json":
        return to_json(path, transcript, duration) + "\n"
    if fmt == "srt":
        return to_srt(transcript, duration)
    if fmt == "vtt":
        return to_vtt(transcript, duration)
    raise ValueError(f"unknown format {fmt!r}")
