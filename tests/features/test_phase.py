import numpy as np

from echoasr.features.phase import accumulated_phase


def test_constant_f0_matches_the_closed_form():
    f0, frames = 137.3, 5000
    phase = accumulated_phase(np.full(frames, f0), np.ones(frames))
    t = np.arange(frames)
    closed = np.mod(2 * np.pi * f0 * 0.01 * (t + 1), 2 * np.pi)
    distance = np.angle(np.exp(1j * (phase - closed)))  # compare on the circle
    assert np.abs(distance).max() < 1e-5
    assert phase.dtype == np.float32 and (phase >= 0).all() and (phase < 2 * np.pi).all()


def test_recursion_with_unvoiced_frames_at_the_reference_rate():
    rng = np.random.default_rng(0)
    f0 = rng.uniform(80, 300, 400)
    voiced = rng.random(400) > 0.3
    f0[~voiced] = 0.0
    phase = accumulated_phase(f0, voiced.astype(np.float32), reference_hz=55.0)
    expected, previous = [], 0.0
    for hz, is_voiced in zip(f0, voiced):
        previous = (previous + 2 * np.pi * (hz if is_voiced else 55.0) * 0.01) % (2 * np.pi)
        expected.append(previous)
    assert np.abs(np.angle(np.exp(1j * (phase - np.array(expected))))).max() < 1e-4


def test_unwrapped_phase_grows_and_wraps_to_the_feature():
    f0 = np.linspace(100, 250, 300)
    unwrapped = accumulated_phase(f0, np.ones(300), unwrapped=True)
    assert (np.diff(unwrapped) > 0).all()
    wrapped = accumulated_phase(f0, np.ones(300))
    assert np.abs(np.angle(np.exp(1j * (np.mod(unwrapped, 2 * np.pi) - wrapped)))).max() < 1e-5


def test_aliasing_at_10_ms_is_as_documented():
    """f0 = 200 Hz advances exactly two turns per frame: the wrapped phase never moves."""
    phase = accumulated_phase(np.full(50, 200.0), np.ones(50))
    np.testing.assert_allclose(np.angle(np.exp(1j * phase)), 0.0, atol=1e-5)
