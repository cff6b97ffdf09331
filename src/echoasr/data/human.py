"""The human test set: Asterisk's English prompts (one professional female speaker).

Audio from the Debian package ``asterisk-core-sounds-en-g722`` (G.722, real 16 kHz speech), texts
from ``asterisk-core-sounds-en`` (``core-sounds-en.txt.gz``). Only prompts whose transcript is
plain words are kept: no digits, symbols, notes in brackets, acronyms or spelled letters.
"""

from __future__ import annotations

import gzip
import logging
import os
import re
import shutil
import subprocess
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import soundfile

from echoasr import atomic
from echoasr.data.manifest import write_manifest
from echoasr.data.records import Utterance
from echoasr.errors import EchoError

log = logging.getLogger(__name__)

AUDIO_PACKAGE = "asterisk-core-sounds-en-g722"
TEXT_PACKAGE = "asterisk-core-sounds-en"
SPEAKER = "asterisk-female"
DEFAULT_SOUNDS_DIR = Path("/usr/share/asterisk/sounds/en_US_f_Allison")
DEFAULT_TRANSCRIPTS = Path("/usr/share/doc/asterisk-core-sounds-en/core-sounds-en.txt.gz")
INSTALL_HINT = (
    f"install the Debian packages {AUDIO_PACKAGE} and {TEXT_PACKAGE} "
    f"(sudo apt-get install {AUDIO_PACKAGE} {TEXT_PACKAGE}, or scripts/install-system-deps); "
    "images that exclude /usr/share/doc from packages lose the transcript file"
)

_CLEAN = re.compile(r"[A-Za-z ,.?!;:'\"-]*[A-Za-z][A-Za-z ,.?!;:'\"-]*")


@dataclass(frozen=True)
class Prompt:
    key: str    # e.g. "vm-goodbye" or "followme/options"
    text: str
    audio: Path


def find_sources() -> tuple[Path, Path]:
    """(folder of the .g722 prompts, the transcripts file), from dpkg or the usual paths."""
    sounds = _from_dpkg(AUDIO_PACKAGE, ".g722")
    sounds_dir = Path(os.path.commonpath(sounds)) if sounds else DEFAULT_SOUNDS_DIR
    transcripts = next(iter(_from_dpkg(TEXT_PACKAGE, "core-sounds-en.txt.gz")), DEFAULT_TRANSCRIPTS)
    if not sounds_dir.is_dir() or not any(sounds_dir.glob("*.g722")):
        raise EchoError(f"no Asterisk G.722 prompts found: {INSTALL_HINT}", sounds_dir)
    if not transcripts.is_file():
        raise EchoError(f"no Asterisk prompt transcripts found: {INSTALL_HINT}", transcripts)
    return sounds_dir, transcripts


def is_clean(text: str) -> bool:
    """Plain words only: letters and sentence punctuation, no acronyms, abbreviations or lone letters."""
    if not _CLEAN.fullmatch(text) or re.search(r"\w\.\w", text):
        return False
    words = re.findall(r"[A-Za-z']+", text)
    if len(words) == 1 and len(words[0]) == 1:
        return False  # a spelled letter ("b"), whatever its transcript says
    return not any(len(word) > 1 and word.isupper() for word in words)


def read_prompts(sounds_dir: Path, transcripts: Path) -> tuple[list[Prompt], int]:
    """The clean prompts that have audio, sorted by key, and how many prompts were listed."""
    try:
        with gzip.open(transcripts, "rt", encoding="utf-8", errors="replace") as handle:
            lines = handle.read().splitlines()
    except (OSError, EOFError) as error:
        raise EchoError(f"cannot read the transcripts: {error}", transcripts) from None
    prompts, listed = {}, 0
    for line in lines:
        key, separator, text = line.partition(": ")
        if line.startswith(";") or not separator:
            continue
        listed += 1
        text = " ".join(text.split())
        audio = sounds_dir / f"{key.strip()}.g722"
        if is_clean(text) and audio.is_file():
            prompts[key.strip()] = Prompt(key.strip(), text, audio)
    return [prompts[key] for key in sorted(prompts)], listed


def build_human_set(out: str | os.PathLike, limit: int | None = None, workers: int | None = None,
                    progress: bool = True) -> dict:
    """Decode the clean prompts to ``out/wav`` and write ``out/human.tsv``; returns a summary."""
    if shutil.which("ffmpeg") is None:
        raise EchoError("ffmpeg is missing: install the Debian package ffmpeg (scripts/install-system-deps)")
    root = Path(out)
    sounds_dir, transcripts = find_sources()
    prompts, listed = read_prompts(sounds_dir, transcripts)
    if limit is not None:
        prompts = prompts[: max(0, limit)]
    if not prompts:
        raise EchoError("no clean prompts to use", transcripts)
    targets = [root / "wav" / f"{prompt.key.replace('/', '__')}.wav" for prompt in prompts]
    pending = [(p, t) for p, t in zip(prompts, targets, strict=True) if not t.is_file()]
    from tqdm import tqdm

    with ThreadPoolExecutor(max_workers=workers or os.cpu_count() or 1) as pool:
        list(tqdm(pool.map(lambda item: _decode(*item), pending), total=len(pending), unit="prompt",
                  desc="decoding prompts", disable=not progress or not pending))
    utterances = [
        Utterance(prompt.key, prompt.text, SPEAKER, round(soundfile.info(str(target)).duration, 3),
                  path=str(target), voice=sounds_dir.name)
        for prompt, target in zip(prompts, targets, strict=True)
    ]
    write_manifest(root / "human.tsv", utterances)
    seconds = sum(u.duration for u in utterances)
    words = sum(len(u.text.split()) for u in utterances)
    summary = {"prompts": len(utterances), "listed": listed, "minutes": round(seconds / 60, 2), "words": words}
    log.info("human set: %(prompts)d of %(listed)d prompts, %(minutes).1f min, %(words)d words", summary)
    return summary


def _decode(prompt: Prompt, target: Path) -> None:
    with atomic.atomic_path(target) as temporary:
        command = ["ffmpeg", "-nostdin", "-loglevel", "error", "-y", "-f", "g722", "-i", str(prompt.audio),
                   "-ar", "16000", "-ac", "1", "-map_metadata", "-1", "-fflags", "+bitexact",
                   "-flags:a", "+bitexact", "-f", "wav", str(temporary)]
        result = subprocess.run(command, capture_output=True, text=True, check=False, stdin=subprocess.DEVNULL)
        if result.returncode != 0:
            raise EchoError(f"ffmpeg could not decode it: {result.stderr.strip()[-300:]}", prompt.audio)


def _from_dpkg(package: str, suffix: str) -> list[Path]:
    if shutil.which("dpkg") is None:
        return []
    result = subprocess.run(["dpkg", "-L", package], capture_output=True, text=True, check=False)
    if result.returncode != 0:
        return []
    return [Path(line) for line in result.stdout.splitlines() if line.endswith(suffix)]
