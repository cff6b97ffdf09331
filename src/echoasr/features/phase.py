"""Accumulated f0 phase: ``phi_t = (phi_(t-1) + 2*pi*f_t*T) mod 2*pi`` with T = 10 ms, phi_(-1) = 0.

``f_t`` is f0 on voiced frames and ``reference_hz`` on unvoiced ones (FeatureSettings'
``phase_reference_hz``, 100 Hz by default), so the phase keeps advancing like a steady voice through
pauses and consonants instead of freezing or resetting; with constant f0 the closed form is
``phi_t = 2*pi*f0*T*(t + 1) mod 2*pi``.

Caveat for models: at a 10 ms frame the wrapped phase is heavily aliased. Each frame adds
``2*pi*f0*T``, i.e. f0/100 whole turns: f0 = 200 Hz advances exactly 4*pi per frame and so leaves
the wrapped phase unchanged, as does the 100 Hz default on unvoiced frames; 205 Hz and 5 Hz look
the same. Only f0 modulo 100 Hz survives in this feature. The model's rotary ``phase`` mode
therefore recomputes an unwrapped phase from f0 itself (``unwrapped=True`` here gives that
quantity for analysis).
"""

from __future__ import annotations

import numpy as np

from echoasr.audio import FRAME_PERIOD

PHASE_REFERENCE_HZ = 100.0


def accumulated_phase(
    f0: np.ndarray,
    voiced: np.ndarray,
    reference_hz: float = PHASE_REFERENCE_HZ,
    *,
    unwrapped: bool = False,
) -> np.ndarray:
    """Phase (T,) in radians, float32 in [0, 2*pi) (float64 and growing if ``unwrapped``)."""
    rate = np.where(np.asarray(voiced) > 0, np.asarray(f0, dtype=np.float64), reference_hz)
    # Accumulate whole turns in float64: an hour at 600 Hz is ~2e6 turns, far inside its precision.
    turns = np.cumsum(rate * FRAME_PERIOD)
    if unwrapped:
        return 2 * np.pi * turns
    phase = (2 * np.pi * (turns % 1.0)).astype(np.float32)
    phase[phase >= np.float32(2 * np.pi)] = 0.0  # float32 rounding of values just below 2*pi
    return phase
