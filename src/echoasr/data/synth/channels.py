"""Recording channels for synthetic speech: rooms, band limits, codecs, babble and noise.

A :class:`Channel` is drawn once per utterance when the corpus is planned (:func:`draw_channel`)
and recorded in ``render.jsonl``; applying it (:func:`apply_channel`) is deterministic, so the
same seed gives the same audio (on any machine: the room simulation runs on one thread). The chain, in the order a real recording meets it:

1. room: a shoebox room (``pyroomacoustics`` image-source impulse response) of random size and
   reverberation time, with the talker and microphone at a random distance;
2. babble: other voices' utterances (from the corpus's babble pool) mixed in at a given SNR;
3. noise: white, pink or brown noise at 5-30 dB SNR (over the whole utterance's power);
4. band limit: a band-pass (e.g. 300-3400 Hz, 100-5000 Hz);
5. codec: a round trip through ffmpeg: G.722 (64 kbit/s), Opus or MP3 at low bit rates, or the
   8 kHz mu-law telephone channel (G.711).
"""

from __future__ import annotations

import subprocess
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import soundfile

from echoasr.errors import EchoError

CODECS = {  # name -> ffmpeg encoder options and container; decoded back to the corpus rate
    "g722": (["-c:a", "g722", "-ar", "16000"], "g722"),
    "opus": (["-c:a", "libopus", "-ar", "16000", "-application", "voip"], "ogg"),
    "mp3": (["-c:a", "libmp3lame", "-ar", "16000"], "mp3"),
    "mulaw": (["-c:a", "pcm_mulaw", "-ar", "8000"], "wav"),
}
BITRATES = {"opus": (8, 12, 16, 24), "mp3": (16, 24, 32)}  # kbit/s
BANDS = ((300, 3400), (200, 4000), (100, 5000), (150, 7000))
# Share of utterances given each effect; several can combine.
SHARES = {"room": 0.4, "babble": 0.15, "noise": 0.5, "band": 0.15, "codec": 0.3}


@dataclass(frozen=True)
class Room:
    size: tuple[float, float, float]     # metres
    rt60: float                          # seconds (Sabine), turned into wall absorption
    source: tuple[float, float, float]
    microphone: tuple[float, float, float]
    max_order: int                       # image-source reflection order (capped for speed)


@dataclass(frozen=True)
class Babble:
    clips: tuple[str, ...]    # babble-pool utterance ids
    offsets: tuple[float, ...]  # seconds into the target where each clip starts (may be negative)
    snr_db: float


@dataclass(frozen=True)
class Channel:
    room: Room | None = None
    babble: Babble | None = None
    noise: str | None = None      # "white", "pink" or "brown"
    snr_db: float | None = None
    noise_seed: int | None = None
    band: tuple[int, int] | None = None
    codec: str | None = None
    bitrate: int | None = None    # kbit/s (opus, mp3)

    def to_json(self) -> dict:
        return {key: value for key, value in asdict(self).items() if value is not None}

    @property
    def empty(self) -> bool:
        return not self.to_json()


def draw_channel(rng: np.random.Generator, babble_pool: list[str], duration_guess: float = 3.0) -> Channel:
    """One utterance's channel. Every effect is drawn (so the stream of draws does not depend on
    which ones apply), then kept with its share in :data:`SHARES`."""
    uses = {name: rng.uniform() < share for name, share in SHARES.items()}
    size = tuple(round(float(v), 2) for v in rng.uniform((3, 3, 2.4), (10, 8, 3.5)))
    rt60 = round(float(rng.uniform(0.15, 0.9)), 3)
    distance = float(rng.uniform(0.5, 4.0))
    margin = 0.3
    microphone = np.array([rng.uniform(margin, s - margin) for s in size])
    direction = rng.normal(size=3)
    direction[2] *= 0.2
    direction /= np.linalg.norm(direction)
    source = np.clip(microphone + distance * direction, margin, np.array(size) - margin)
    source[2] = float(np.clip(source[2], 1.2, size[2] - margin))
    room = Room(size, rt60, tuple(round(float(v), 3) for v in source), tuple(round(float(v), 3) for v in microphone),
                max_order=int(rng.integers(6, 13)))
    clips = tuple(str(c) for c in rng.choice(babble_pool, size=min(len(babble_pool), int(rng.integers(3, 7))),
                                              replace=False)) if babble_pool else ()
    offsets = tuple(round(float(o), 3) for o in rng.uniform(-1.0, duration_guess, size=len(clips)))
    babble = Babble(clips, offsets, round(float(rng.uniform(5, 20)), 1))
    noise = ("white", "pink", "brown")[int(rng.integers(3))]
    snr_db = round(float(rng.uniform(5, 30)), 1)
    noise_seed = int(rng.integers(2**31))
    band = BANDS[int(rng.integers(len(BANDS)))]
    codec = tuple(CODECS)[int(rng.integers(len(CODECS)))]
    bitrate_choices = BITRATES.get(codec, (0,))
    bitrate = int(bitrate_choices[int(rng.integers(len(bitrate_choices)))])
    return Channel(
        room=room if uses["room"] else None,
        babble=babble if uses["babble"] and clips else None,
        noise=noise if uses["noise"] else None,
        snr_db=snr_db if uses["noise"] else None,
        noise_seed=noise_seed if uses["noise"] else None,
        band=band if uses["band"] else None,
        codec=codec if uses["codec"] else None,
        bitrate=bitrate if uses["codec"] and bitrate else None,
    )


def apply_channel(audio: np.ndarray, rate: int, channel: Channel, babble_audio: dict[str, np.ndarray] | None = None) -> np.ndarray:
    """``audio`` (float64 mono at ``rate``) through ``channel``; same length."""
    if channel.room is not None:
        audio = reverberate(audio, rate, channel.room)
    if channel.babble is not None:
        audio = add_babble(audio, rate, channel.babble, babble_audio or {})
    if channel.noise is not None:
        audio = add_noise(audio, channel.noise, channel.snr_db, channel.noise_seed)
    if channel.band is not None:
        audio = band_limit(audio, rate, channel.band)
    if channel.codec is not None:
        audio = codec_round_trip(audio, rate, channel.codec, channel.bitrate)
    return audio


# pyroomacoustics sums the image sources of a response in one float32 buffer per thread, then adds
# the buffers: the bytes depend on its thread count, which defaults to the machine's core count
# (os.cpu_count(); it ignores OMP_NUM_THREADS). One thread makes a room the same on every machine.
ROOM_THREADS = 1


def room_impulse_response(room: Room, rate: int) -> np.ndarray:
    import pyroomacoustics as pra

    absorption, _ = pra.inverse_sabine(room.rt60, list(room.size))
    shoebox = pra.ShoeBox(list(room.size), fs=rate, materials=pra.Material(min(absorption, 1.0)),
                          max_order=room.max_order)
    shoebox.add_source(list(room.source))
    shoebox.add_microphone(list(room.microphone))
    previous = pra.constants.get("num_threads")
    pra.constants.set("num_threads", ROOM_THREADS)
    try:
        shoebox.compute_rir()
    finally:
        pra.constants.set("num_threads", previous)
    return np.asarray(shoebox.rir[0][0], dtype=np.float64)


def reverberate(audio: np.ndarray, rate: int, room: Room) -> np.ndarray:
    from scipy.signal import fftconvolve

    rir = room_impulse_response(room, rate)
    # pyroomacoustics delays the response by its fractional-delay filter and the direct path:
    # start at the direct sound, so the words stay where they were.
    start = int(np.argmax(np.abs(rir)))
    return fftconvolve(audio, rir[start:])[: len(audio)]


def add_babble(audio: np.ndarray, rate: int, babble: Babble, clips: dict[str, np.ndarray]) -> np.ndarray:
    mixture = np.zeros_like(audio)
    for clip_id, offset in zip(babble.clips, babble.offsets, strict=True):
        clip = clips[clip_id]
        start = int(round(offset * rate))
        if start < 0:
            clip, start = clip[-start:], 0
        end = min(len(audio), start + len(clip))
        if end > start:
            mixture[start:end] += clip[: end - start]
    return mix_at_snr(audio, mixture, babble.snr_db)


def noise_signal(kind: str, length: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    noise = rng.standard_normal(length)
    if kind in ("pink", "brown"):
        spectrum = np.fft.rfft(noise)
        slope = np.arange(1, len(spectrum)) ** (0.5 if kind == "pink" else 1.0)
        spectrum[1:] /= slope
        spectrum[0] = 0
        noise = np.fft.irfft(spectrum, n=length)
    return noise


def add_noise(audio: np.ndarray, kind: str, snr_db: float, seed: int) -> np.ndarray:
    return mix_at_snr(audio, noise_signal(kind, len(audio), seed), snr_db)


def mix_at_snr(audio: np.ndarray, interference: np.ndarray, snr_db: float) -> np.ndarray:
    """``audio + g * interference`` with g such that power(audio) / power(g * interference) is ``snr_db``."""
    signal_power = float(np.mean(audio**2))
    interference_power = float(np.mean(interference**2))
    if interference_power == 0 or signal_power == 0:
        return audio
    return audio + np.sqrt(signal_power / interference_power / 10 ** (snr_db / 10)) * interference


def band_limit(audio: np.ndarray, rate: int, band: tuple[int, int]) -> np.ndarray:
    from scipy.signal import butter, sosfiltfilt

    low, high = band
    sos = butter(6, [low, min(high, 0.45 * rate)], btype="bandpass", fs=rate, output="sos")
    return sosfiltfilt(sos, audio)


def codec_round_trip(audio: np.ndarray, rate: int, codec: str, bitrate: int | None) -> np.ndarray:
    """Encode with ffmpeg and decode back to ``rate``; the result is aligned to ``audio``'s length."""
    options, container = CODECS[codec]
    if bitrate:
        options = [*options, "-b:a", f"{bitrate}k"]
    peak = float(np.max(np.abs(audio))) or 1.0
    with tempfile.TemporaryDirectory(prefix="echoasr-codec-") as scratch:
        source, encoded, decoded = (Path(scratch) / name for name in ("in.wav", f"coded.{container}", "out.wav"))
        soundfile.write(source, audio / peak * 0.9, rate, subtype="FLOAT")
        for command in (
            ["ffmpeg", "-nostdin", "-loglevel", "error", "-y", "-i", str(source), *options, "-f", container, str(encoded)],
            ["ffmpeg", "-nostdin", "-loglevel", "error", "-y", "-i", str(encoded), "-ar", str(rate), "-ac", "1",
             "-c:a", "pcm_f32le", str(decoded)],
        ):
            result = subprocess.run(command, capture_output=True, text=True, check=False, stdin=subprocess.DEVNULL)
            if result.returncode != 0:
                raise EchoError(f"ffmpeg ({codec}) failed: {result.stderr.strip()[-300:]}")
        out, _ = soundfile.read(decoded, dtype="float64")
    out = out * peak / 0.9
    # Encoders add a little delay (Opus pre-skip is removed by ffmpeg; MP3 keeps ~1 frame): trim or pad.
    if len(out) < len(audio):
        out = np.pad(out, (0, len(audio) - len(out)))
    return out[: len(audio)]
