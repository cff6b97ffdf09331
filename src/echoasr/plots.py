"""Pictures (matplotlib, Agg backend: no display needed). Each plot is written atomically."""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from echoasr.atomic import atomic_write
from echoasr.audio import FRAME_PERIOD, SAMPLE_RATE
from echoasr.errors import EchoError

if TYPE_CHECKING:
    from echoasr.features import FeatureSettings

_MAX_WAVEFORM_POINTS = 4000  # longer signals are drawn as a min/max envelope
_SPECTROGRAM_TICKS_HZ = (0, 250, 500, 1000, 2000, 4000, 8000)


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_pitch(
    audio: np.ndarray,
    features: dict[str, np.ndarray],
    out: str | os.PathLike,
    *,
    title: str = "",
    f0_method: str = "",
) -> Path:
    """Waveform, log-mel spectrogram with the f0 track, and f0 with voicing, stacked in time.

    ``features`` needs ``mel``, ``f0`` and ``voiced`` as returned by ``extract``. The PNG is
    written to ``out`` (any format matplotlib knows from the suffix also works).
    """
    plt = _pyplot()
    from matplotlib.backend_bases import FigureCanvasBase

    out = Path(out)
    image_format = out.suffix.lstrip(".").lower() or "png"
    if image_format not in FigureCanvasBase.get_supported_filetypes():
        raise EchoError(f"cannot write images of type {out.suffix!r}; use .png, .pdf or .svg", out)
    mel, f0, voiced = features["mel"], features["f0"], features["voiced"] > 0
    frames = len(f0)
    times = np.arange(frames) * FRAME_PERIOD
    duration = len(audio) / SAMPLE_RATE
    f0_voiced = np.where(voiced, f0, np.nan)

    fig, (wave_ax, spec_ax, f0_ax) = plt.subplots(
        3, 1, figsize=(12, 7.5), sharex=True, gridspec_kw={"height_ratios": [1, 2, 1.4]}, constrained_layout=True
    )
    _draw_waveform(wave_ax, audio)
    wave_ax.set_ylabel("amplitude")
    wave_ax.set_ylim(-1.05 * max(1e-3, float(np.abs(audio).max())), 1.05 * max(1e-3, float(np.abs(audio).max())))

    spec_ax.imshow(
        mel, origin="lower", aspect="auto", cmap="magma", interpolation="nearest",
        extent=(-FRAME_PERIOD / 2, (frames - 0.5) * FRAME_PERIOD, -0.5, mel.shape[0] - 0.5),
    )
    centres = _mel_centres_hz(mel.shape[0])
    spec_ax.set_yticks(np.interp(_SPECTROGRAM_TICKS_HZ, centres, np.arange(len(centres))))
    spec_ax.set_yticklabels([f"{hz / 1000:g}k" if hz >= 1000 else str(hz) for hz in _SPECTROGRAM_TICKS_HZ])
    spec_ax.plot(times, np.interp(f0_voiced, centres, np.arange(len(centres)), left=np.nan), color="cyan", lw=1.2)
    spec_ax.set_ylabel("log-mel (Hz)")

    f0_ax.fill_between(times, 0, 1, where=voiced, transform=f0_ax.get_xaxis_transform(),
                       color="tab:green", alpha=0.15, step="mid", label="voiced", linewidth=0)
    f0_ax.plot(times, f0_voiced, color="tab:blue", lw=1.5, label="f0")
    if voiced.any():
        low, high = float(np.nanmin(f0_voiced)), float(np.nanmax(f0_voiced))
        f0_ax.set_ylim(max(0.0, low * 0.8), high * 1.2)
        stats = f"median {np.nanmedian(f0_voiced):.0f} Hz, voiced {100 * voiced.mean():.0f}%"
    else:
        f0_ax.set_ylim(0, 500)
        f0_ax.text(0.5, 0.5, "no voiced frames", transform=f0_ax.transAxes, ha="center", va="center")
        stats = "no voiced frames"
    f0_ax.set_ylabel(f"f0 (Hz){f' [{f0_method}]' if f0_method else ''}")
    f0_ax.set_xlabel("time (s)")
    f0_ax.legend(loc="upper right", fontsize="small")
    f0_ax.set_xlim(0, max(duration, FRAME_PERIOD))
    fig.suptitle(f"{title}  ({duration:.2f} s, {stats})" if title else f"{duration:.2f} s, {stats}")

    try:
        with atomic_write(out) as file:
            fig.savefig(file, format=image_format, dpi=100)
    finally:
        plt.close(fig)
    return out


def _draw_waveform(ax, audio: np.ndarray) -> None:
    if len(audio) <= _MAX_WAVEFORM_POINTS:
        ax.plot(np.arange(len(audio)) / SAMPLE_RATE, audio, color="tab:gray", lw=0.6)
        return
    per_bin = int(np.ceil(len(audio) / _MAX_WAVEFORM_POINTS))
    bins = len(audio) // per_bin
    blocks = audio[: bins * per_bin].reshape(bins, per_bin)
    times = (np.arange(bins) + 0.5) * per_bin / SAMPLE_RATE
    ax.fill_between(times, blocks.min(axis=1), blocks.max(axis=1), color="tab:gray", linewidth=0)


def _mel_centres_hz(n_mels: int) -> np.ndarray:
    import librosa

    return librosa.mel_frequencies(n_mels=n_mels + 2, fmin=0.0, fmax=SAMPLE_RATE / 2)[1:-1]


def plot_pitch_file(
    path: str | os.PathLike,
    out: str | os.PathLike,
    settings: FeatureSettings | None = None,
    cache_dir: str | os.PathLike | None = None,
) -> Path:
    """Load ``path``, extract mel and f0 (with ``settings``) and draw ``plot_pitch`` to ``out``."""
    from echoasr.audio import load_audio
    from echoasr.features import FeatureSettings, extract_file

    settings = settings or FeatureSettings()
    audio = load_audio(path)
    features = extract_file(path, ["mel", "f0"], settings, cache_dir, audio=audio)
    return plot_pitch(audio, features, out, title=Path(path).name, f0_method=settings.f0_method)
