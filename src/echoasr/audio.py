"""Audio loading: any file soundfile reads, or raw PCM, as 16 kHz mono float32 in [-1, 1].

Pure functions and module constants, in the spirit of Whisper's ``audio.py``. Every problem with a
user's file raises :class:`~echoasr.errors.EchoError` naming the file.

Files are read in blocks and resampled with a streaming soxr resampler (high quality), so memory
stays at about the size of the 16 kHz result (one hour = 230 MB) and time is linear in the length,
whatever the source rate or channel count.

Rules for unusual input:

* ``.pcm`` / ``.raw`` files are headerless 16-bit signed little-endian PCM, 16 kHz mono unless the
  caller says otherwise (``pcm_sample_rate``, ``pcm_channels``). Any bytes are valid PCM, so a
  non-audio file with these suffixes cannot be detected; a dangling partial sample frame at the end
  is dropped with a warning.
* A truncated file (its header promises more audio than the file holds, e.g. an interrupted copy or
  recording) is decoded as far as it goes, with a logged warning naming the file and the frames
  read of those declared: the readable part is real audio, and streamed WAVs whose header size is
  a placeholder (0 or 0xFFFFFFFF) look the same to a strict check. WAV and WAVE_FORMAT_EXTENSIBLE
  files are checked against their data chunk's size, compressed ones (MP3, FLAC, Ogg) against the
  frame count their header declares. A WAV whose readable part is empty is an error like any
  zero-length file. :func:`find_truncation` tells without loading (``evaluate`` counts them).
* NaN or infinite samples (possible in float WAV/FLAC) are an error: no feature is defined on them.
* Float samples beyond [-1, 1] are clipped, with a warning; silence is fine.
"""

from __future__ import annotations

import logging
import os
import struct
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from echoasr.errors import EchoError

log = logging.getLogger(__name__)

SAMPLE_RATE = 16000
HOP_LENGTH = 160  # 10 ms
FRAME_PERIOD = HOP_LENGTH / SAMPLE_RATE  # seconds per frame (0.01)

PCM_SUFFIXES = (".pcm", ".raw")
PCM_SAMPLE_RATE = 16000
PCM_CHANNELS = 1

RESAMPLE_QUALITY = "HQ"
_BLOCK_FRAMES = 1 << 18  # source frames decoded per block (~5 s at 48 kHz)
_WAV_UNKNOWN_SIZES = (0, 0xFFFFFFFF)  # placeholders streaming writers put in the data size
# A compressed file's declared length may be an estimate (no Xing/VBRI header): short by more than
# this share, or this many frames, it is truncated.
_TRUNCATION_SLACK_SHARE = 0.01
_TRUNCATION_SLACK_FRAMES = 4608  # four MP3 frames


@dataclass(frozen=True)
class Truncation:
    """A file holding less audio than its header declares (frames at the file's own rate)."""

    frames_read: int
    frames_declared: int

    def describe(self) -> str:
        share = 100 * self.frames_read / self.frames_declared if self.frames_declared else 0.0
        return f"read {self.frames_read} of the {self.frames_declared} frames its header declares ({share:.1f}%)"


def num_frames(num_samples: int) -> int:
    """Frames of ``num_samples`` at 16 kHz: frame t is centred on sample ``t * HOP_LENGTH``."""
    return 1 + num_samples // HOP_LENGTH


def load_audio(
    path: str | os.PathLike,
    *,
    pcm_sample_rate: int = PCM_SAMPLE_RATE,
    pcm_channels: int = PCM_CHANNELS,
) -> np.ndarray:
    """Read ``path`` as 16 kHz mono float32 in [-1, 1]; raise ``EchoError(message, path)`` if bad."""
    path = Path(path)
    size = _file_size(path)
    if size == 0:
        raise EchoError("empty file (0 bytes)", path)
    if path.suffix.lower() in PCM_SUFFIXES:
        if pcm_sample_rate <= 0 or pcm_channels <= 0:
            raise EchoError("raw PCM needs a positive sample rate and channel count", path)
        frames = _pcm_frames(path, size, pcm_channels)
        audio = _convert(_pcm_blocks(path, pcm_channels, frames), pcm_sample_rate, frames, path)
    else:
        audio = _load_soundfile(path, size)
    if audio.size == 0:
        raise EchoError("contains no audio samples", path)
    return audio


def _file_size(path: Path) -> int:
    if path.is_dir():
        raise EchoError("is a directory, not an audio file", path)
    try:
        size = path.stat().st_size
    except FileNotFoundError:
        raise EchoError("no such file", path) from None
    if not os.access(path, os.R_OK):
        raise EchoError("permission denied", path)
    return size


def _load_soundfile(path: Path, size: int) -> np.ndarray:
    import soundfile

    sound = _open_soundfile(path)
    with sound:
        wav_declared = _wav_declared_frames(path, size)
        if wav_declared is not None and sound.frames == 0:
            raise EchoError(f"truncated WAV: header declares {wav_declared} frames, file holds none", path)
        counted = _CountedBlocks(sound)
        try:
            audio = _convert(iter(counted), sound.samplerate, sound.frames, path)
        except soundfile.LibsndfileError as error:
            raise EchoError(f"could not decode audio ({_libsndfile_reason(error)})", path) from None
    truncation = _truncation(counted.frames, sound.frames, wav_declared)
    if truncation:
        kind = "WAV" if wav_declared is not None else f"{sound.format} file"
        log.warning("%s: truncated %s: %s; decoded what is there", path, kind, truncation.describe())
    return audio


def find_truncation(path: str | os.PathLike) -> Truncation | None:
    """How much of ``path`` is missing, if its header declares more audio than it holds; None for
    a whole file or one that cannot be read (:func:`load_audio` says why). A WAV is judged by its
    header alone; a compressed file is decoded to count its frames."""
    import soundfile

    path = Path(path)
    if path.suffix.lower() in PCM_SUFFIXES:
        return None  # headerless: nothing is declared
    try:
        size = path.stat().st_size
        sound = _open_soundfile(path)
    except (OSError, EchoError):
        return None
    with sound:
        wav_declared = _wav_declared_frames(path, size)
        if wav_declared is not None:
            return Truncation(sound.frames, wav_declared)  # libsndfile counts only the readable frames
        try:
            frames = sum(len(block) for block in _CountedBlocks(sound))
        except (soundfile.LibsndfileError, RuntimeError):  # a decoding error is load_audio's to report
            return None
    return _truncation(frames, sound.frames, None)


def _open_soundfile(path: Path):
    import soundfile

    try:
        return soundfile.SoundFile(path)
    except soundfile.LibsndfileError as error:
        raise EchoError(f"not an audio file soundfile can read ({_libsndfile_reason(error)})", path) from None
    except PermissionError:
        raise EchoError("permission denied", path) from None


class _CountedBlocks:
    """(frames, channels) float32 blocks until the decoder stops, counting the frames read.

    Not ``SoundFile.blocks``: it trusts the declared length and, when the data ends sooner, yields
    its previous buffer again (a truncated MP3 came back full length, its end a repeated block)."""

    def __init__(self, sound):
        self.sound, self.frames = sound, 0

    def __iter__(self) -> Iterator[np.ndarray]:
        while True:
            block = self.sound.read(_BLOCK_FRAMES, dtype="float32", always_2d=True)
            if not len(block):
                return
            self.frames += len(block)
            yield block


def _truncation(frames_read: int, frames_declared: int, wav_declared: int | None) -> Truncation | None:
    if wav_declared is not None:
        return Truncation(frames_read, wav_declared)
    slack = max(_TRUNCATION_SLACK_FRAMES, int(_TRUNCATION_SLACK_SHARE * frames_declared))
    return Truncation(frames_read, frames_declared) if frames_read < frames_declared - slack else None


def _libsndfile_reason(error: Exception) -> str:
    return str(getattr(error, "error_string", "") or error).strip().rstrip(".")


def _convert(blocks: Iterator[np.ndarray], rate: int, frames: int, path: Path) -> np.ndarray:
    """Downmix, check and resample (frames, channels) float32 blocks into one 16 kHz array."""
    import soxr

    resampler = None if rate == SAMPLE_RATE else soxr.ResampleStream(rate, SAMPLE_RATE, 1, "float32", RESAMPLE_QUALITY)
    out = np.empty(int(np.ceil(frames * SAMPLE_RATE / rate)) + 16, dtype=np.float32)
    filled = 0
    peak = 0.0
    for block in blocks:
        mono = block[:, 0] if block.shape[1] == 1 else block.mean(axis=1, dtype=np.float32)
        if not np.isfinite(mono).all():
            raise EchoError("contains NaN or infinite samples", path)
        if mono.size:
            peak = max(peak, float(np.abs(mono).max()))
        if resampler is not None:
            mono = resampler.resample_chunk(mono)
        out, filled = _append(out, filled, mono)
    if resampler is not None:
        out, filled = _append(out, filled, resampler.resample_chunk(np.zeros(0, np.float32), last=True))
    audio = out[:filled] if filled > len(out) // 2 else out[:filled].copy()
    if peak > 1.0:
        log.warning("%s: samples reach %.3g, beyond [-1, 1]; clipped", path, peak)
    # soxr's anti-aliasing filter can overshoot full-scale input by a little: keep the contract.
    np.clip(audio, -1.0, 1.0, out=audio)
    return audio


def _append(out: np.ndarray, filled: int, chunk: np.ndarray) -> tuple[np.ndarray, int]:
    end = filled + len(chunk)
    if end > len(out):
        grown = np.empty(max(end, 2 * len(out)), dtype=out.dtype)
        grown[:filled] = out[:filled]
        out = grown
    out[filled:end] = chunk
    return out, end


def _pcm_frames(path: Path, size: int, channels: int) -> int:
    frame_bytes = 2 * channels
    frames, dangling = divmod(size, frame_bytes)
    if frames == 0:
        raise EchoError(f"raw PCM of {size} byte(s) holds no whole {channels}-channel 16-bit sample", path)
    if dangling:
        log.warning("%s: ignoring %d trailing byte(s): not a whole 16-bit sample frame", path, dangling)
    return frames


def _pcm_blocks(path: Path, channels: int, frames: int) -> Iterator[np.ndarray]:
    samples = np.memmap(path, dtype="<i2", mode="r", shape=(frames, channels))
    scale = np.float32(1 / 32768)
    for start in range(0, frames, _BLOCK_FRAMES):
        yield samples[start : start + _BLOCK_FRAMES] * scale


def _wav_declared_frames(path: Path, size: int) -> int | None:
    """The frames a RIFF/WAVE file's data chunk declares when it claims more bytes than the file
    holds (any WAVE format tag, WAVE_FORMAT_EXTENSIBLE included); None otherwise."""
    block_align = None
    try:
        with open(path, "rb") as file:
            riff, _, wave = struct.unpack("<4sI4s", file.read(12))
            if riff != b"RIFF" or wave != b"WAVE":
                return None
            while len(header := file.read(8)) == 8:
                chunk_id, chunk_size = struct.unpack("<4sI", header)
                if chunk_id == b"fmt " and chunk_size >= 14:
                    block_align = struct.unpack("<12xH", file.read(14))[0]
                    file.seek(chunk_size - 14 + (chunk_size & 1), os.SEEK_CUR)
                    continue
                if chunk_id == b"data":
                    available = size - file.tell()
                    if chunk_size in _WAV_UNKNOWN_SIZES or chunk_size <= available:
                        return None
                    return chunk_size // block_align if block_align else chunk_size
                file.seek(chunk_size + (chunk_size & 1), os.SEEK_CUR)
    except (OSError, struct.error):
        pass
    return None
