"""f0 trackers on the 10 ms frame grid: f0 in Hz (0 where unvoiced) plus a separate voicing flag.

* ``dio`` (default): WORLD DIO refined by StoneMask; fast, permissive licence.
* ``harvest``: WORLD Harvest. Harvest deliberately reports an f0 almost everywhere (its author
  leaves voicing to D4C), so a frame is voiced only if D4C's voicing test (LoveTrain) agrees; this
  removes Harvest's ~10% "voiced" frames on white noise. Harvest rejects a noiseless pure sinusoid
  (it is tuned for harmonic sources); ~30x slower than DIO.
* ``praat``: Praat's autocorrelation method (praat-parselmouth, optional extra ``echoasr[praat]``).
  Praat centres its own frame grid in the file, so its track is interpolated onto ours.
* ``pyin``: librosa's probabilistic YIN. A frame is voiced when the HMM says so *and* YIN found a
  pitch candidate there (voiced probability above its no-candidate floor); otherwise the HMM's
  sticky voiced state marks a few percent of white-noise frames voiced. ~15x slower than DIO.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable

import numpy as np

from echoasr.audio import FRAME_PERIOD, HOP_LENGTH, SAMPLE_RATE, num_frames
from echoasr.errors import EchoError
from echoasr.features.segments import fit_frames, map_segments
from echoasr.features.settings import F0_METHODS

_MIN_ANALYSIS_SAMPLES = 1600  # shorter clips are zero-padded to 0.1 s for the trackers
_D4C_VOICED_MAX_APERIODICITY = 0.5  # D4C leaves unvoiced frames fully aperiodic (1.0) at 0 Hz
_PYIN_MIN_VOICED_PROBABILITY = 0.02  # 2x librosa's no_trough_prob (0.01): YIN found a candidate


def pyworld():
    """Import pyworld without its pkg_resources deprecation warning reaching users."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        import pyworld as module
    return module


def track_pitch(
    audio: np.ndarray, method: str = "dio", f0_floor: float = 60.0, f0_ceil: float = 600.0
) -> tuple[np.ndarray, np.ndarray]:
    """Return ``(f0, voiced)``, both float32 of shape (num_frames(len(audio)),).

    f0 is in Hz on voiced frames and exactly 0.0 elsewhere; voiced is 1.0 / 0.0.
    """
    if method not in F0_METHODS:
        raise EchoError(f"unknown f0 method {method!r}; choose from {', '.join(F0_METHODS)}")
    tracker = _TRACKERS[method]
    min_samples = max(_MIN_ANALYSIS_SAMPLES, int(np.ceil(4 * SAMPLE_RATE / f0_floor)))

    def analyse(samples: np.ndarray, first_frame: int) -> np.ndarray:
        frames = num_frames(len(samples))
        padded = np.zeros(max(len(samples), min_samples), dtype=np.float64)
        padded[: len(samples)] = samples
        f0, voiced = tracker(padded, f0_floor, f0_ceil)
        return np.stack([fit_frames(f0, frames), fit_frames(voiced.astype(np.float64), frames)])

    f0, voiced = map_segments(audio, analyse)
    voiced = (voiced > 0.5) & np.isfinite(f0) & (f0 > 0)
    return np.where(voiced, f0, 0.0).astype(np.float32), voiced.astype(np.float32)


def _frame_times(samples: np.ndarray) -> np.ndarray:
    return np.arange(num_frames(len(samples))) * FRAME_PERIOD


def _dio(x: np.ndarray, f0_floor: float, f0_ceil: float) -> tuple[np.ndarray, np.ndarray]:
    pw = pyworld()
    times = _frame_times(x)
    coarse, _ = pw.dio(x, SAMPLE_RATE, f0_floor=f0_floor, f0_ceil=f0_ceil, frame_period=FRAME_PERIOD * 1000)
    coarse = fit_frames(coarse, len(times))
    return pw.stonemask(x, coarse, times, SAMPLE_RATE), coarse > 0


def _harvest(x: np.ndarray, f0_floor: float, f0_ceil: float) -> tuple[np.ndarray, np.ndarray]:
    pw = pyworld()
    times = _frame_times(x)
    f0, _ = pw.harvest(x, SAMPLE_RATE, f0_floor=f0_floor, f0_ceil=f0_ceil, frame_period=FRAME_PERIOD * 1000)
    f0 = np.ascontiguousarray(fit_frames(f0, len(times)))
    aperiodicity = pw.d4c(x, f0, times, SAMPLE_RATE)
    return f0, (f0 > 0) & (aperiodicity[:, 0] < _D4C_VOICED_MAX_APERIODICITY)


def _praat(x: np.ndarray, f0_floor: float, f0_ceil: float) -> tuple[np.ndarray, np.ndarray]:
    try:
        import parselmouth
    except ImportError:
        raise EchoError(
            "the praat f0 method needs praat-parselmouth: pip install 'echoasr[praat]'"
        ) from None
    pitch = parselmouth.Sound(x, SAMPLE_RATE).to_pitch_ac(
        time_step=FRAME_PERIOD, pitch_floor=f0_floor, pitch_ceiling=f0_ceil
    )
    return _onto_frame_grid(pitch.xs(), pitch.selected_array["frequency"], _frame_times(x))


def _onto_frame_grid(times: np.ndarray, f0: np.ndarray, grid: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Resample a track on another regular grid: voicing from the nearest frame, f0 interpolated
    linearly between two voiced neighbours (else the nearest frame's value)."""
    if len(times) == 0:
        return np.zeros(len(grid)), np.zeros(len(grid), dtype=bool)
    step = times[1] - times[0] if len(times) > 1 else FRAME_PERIOD
    position = (grid - times[0]) / step
    inside = (position > -0.5) & (position < len(times) - 0.5)
    last = len(times) - 1
    nearest = np.clip(np.rint(position), 0, last).astype(int)
    left = np.clip(np.floor(position), 0, last).astype(int)
    right = np.minimum(left + 1, last)
    weight = np.clip(position - left, 0.0, 1.0)
    both = (f0[left] > 0) & (f0[right] > 0)
    value = np.where(both, (1 - weight) * f0[left] + weight * f0[right], f0[nearest])
    voiced = inside & (f0[nearest] > 0)
    return value, voiced


def _pyin(x: np.ndarray, f0_floor: float, f0_ceil: float) -> tuple[np.ndarray, np.ndarray]:
    import librosa

    # YIN compares lags up to one period of f0_floor inside half a frame.
    frame_length = 1 << int(np.ceil(np.log2(2 * SAMPLE_RATE / f0_floor + 2)))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-zero frames divide by zero internally
        f0, flag, probability = librosa.pyin(
            x, fmin=f0_floor, fmax=f0_ceil, sr=SAMPLE_RATE, frame_length=frame_length,
            hop_length=HOP_LENGTH, center=True, fill_na=0.0,
        )
    return f0, flag & (probability > _PYIN_MIN_VOICED_PROBABILITY)


_TRACKERS: dict[str, Callable[[np.ndarray, float, float], tuple[np.ndarray, np.ndarray]]] = {
    "dio": _dio,
    "harvest": _harvest,
    "praat": _praat,
    "pyin": _pyin,
}
