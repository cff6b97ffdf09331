import logging
import tracemalloc

import numpy as np
import pytest
import soundfile as sf
import soxr

from echoasr import audio as audio_module
from echoasr.audio import FRAME_PERIOD, HOP_LENGTH, SAMPLE_RATE, load_audio, num_frames
from echoasr.errors import EchoError


def tone(seconds: float, sample_rate: int, hz: float = 440.0, amplitude: float = 0.5) -> np.ndarray:
    t = np.arange(int(seconds * sample_rate)) / sample_rate
    return (amplitude * np.sin(2 * np.pi * hz * t)).astype(np.float32)


def peak_hz(audio: np.ndarray, sample_rate: int = 16000) -> float:
    spectrum = np.abs(np.fft.rfft(audio * np.hanning(len(audio))))
    return float(np.fft.rfftfreq(len(audio), 1 / sample_rate)[spectrum.argmax()])


def test_constants_follow_the_frame_convention():
    assert (SAMPLE_RATE, HOP_LENGTH, FRAME_PERIOD) == (16000, 160, 0.01)
    assert [num_frames(n) for n in (0, 1, 159, 160, 161, 16000)] == [1, 1, 1, 2, 2, 101]


def test_16k_mono_wav_round_trips(tmp_path):
    x = tone(0.5, 16000)
    sf.write(tmp_path / "a.wav", x, 16000, subtype="PCM_16")
    y = load_audio(tmp_path / "a.wav")
    assert y.dtype == np.float32 and y.shape == x.shape
    np.testing.assert_allclose(y, x, atol=1 / 32768)


@pytest.mark.parametrize("rate", [8000, 22050, 44100, 48000])
def test_other_rates_are_resampled_to_16k(tmp_path, rate):
    sf.write(tmp_path / "a.wav", tone(1.0, rate, hz=440.0), rate, subtype="PCM_16")
    y = load_audio(tmp_path / "a.wav")
    assert len(y) == round(rate * 1.0 * SAMPLE_RATE / rate)
    assert abs(peak_hz(y) - 440.0) <= 1.0
    assert 0.45 < np.abs(y[1000:-1000]).max() <= 0.51


def test_stereo_is_downmixed_by_averaging(tmp_path):
    left, right = tone(0.5, 16000, hz=300.0), tone(0.5, 16000, hz=700.0, amplitude=0.2)
    sf.write(tmp_path / "s.wav", np.stack([left, right], axis=1), 16000, subtype="FLOAT")
    np.testing.assert_allclose(load_audio(tmp_path / "s.wav"), (left + right) / 2, atol=1e-7)


@pytest.mark.parametrize("suffix,subtype", [(".flac", "PCM_16"), (".ogg", "VORBIS")])
def test_compressed_formats_load(tmp_path, suffix, subtype):
    sf.write(tmp_path / f"a{suffix}", tone(1.0, 48000, hz=440.0), 48000, subtype=subtype)
    y = load_audio(tmp_path / f"a{suffix}")
    assert abs(len(y) - 16000) <= 2 and abs(peak_hz(y) - 440.0) <= 1.0


def test_raw_pcm_defaults_to_16k_mono_little_endian(tmp_path):
    samples = (tone(0.25, 16000) * 32767).astype("<i2")
    (tmp_path / "a.pcm").write_bytes(samples.tobytes())
    np.testing.assert_allclose(load_audio(tmp_path / "a.pcm"), samples / 32768, atol=1e-7)


def test_raw_pcm_rate_and_channels_can_be_given(tmp_path, caplog):
    stereo = (np.stack([tone(1.0, 8000, hz=200.0), tone(1.0, 8000, hz=200.0)], axis=1) * 32767).astype("<i2")
    (tmp_path / "a.raw").write_bytes(stereo.tobytes() + b"\x01")  # plus one dangling byte
    with caplog.at_level(logging.WARNING):
        y = load_audio(tmp_path / "a.raw", pcm_sample_rate=8000, pcm_channels=2)
    assert len(y) == 16000 and abs(peak_hz(y) - 200.0) <= 1.0
    assert "trailing byte" in caplog.text


def test_streaming_resampler_matches_one_shot(tmp_path, monkeypatch):
    monkeypatch.setattr(audio_module, "_BLOCK_FRAMES", 4096)  # many blocks
    x = np.random.default_rng(0).uniform(-0.5, 0.5, size=(48000 * 2 + 123, 2)).astype(np.float32)
    sf.write(tmp_path / "a.wav", x, 48000, subtype="FLOAT")
    expected = soxr.resample(x.mean(axis=1), 48000, SAMPLE_RATE, "HQ")
    np.testing.assert_allclose(load_audio(tmp_path / "a.wav"), np.clip(expected, -1, 1), atol=1e-6)


def test_silence_loads_as_zeros(tmp_path):
    sf.write(tmp_path / "quiet.wav", np.zeros(8000, np.int16), 16000, subtype="PCM_16")
    y = load_audio(tmp_path / "quiet.wav")
    assert len(y) == 8000 and not y.any()


def test_float_samples_beyond_full_scale_are_clipped_with_a_warning(tmp_path, caplog):
    sf.write(tmp_path / "loud.wav", tone(0.1, 16000, amplitude=2.0), 16000, subtype="FLOAT")
    with caplog.at_level(logging.WARNING):
        y = load_audio(tmp_path / "loud.wav")
    assert y.max() == 1.0 and y.min() == -1.0 and "clipped" in caplog.text


def test_truncated_wav_decodes_the_readable_part_with_a_warning(tmp_path, wav_bytes_16k, caplog):
    (tmp_path / "cut.wav").write_bytes(wav_bytes_16k[: 44 + 8000])  # 4000 of 16000 samples
    with caplog.at_level(logging.WARNING):
        y = load_audio(tmp_path / "cut.wav")
    assert len(y) == 4000
    assert "truncated WAV" in caplog.text


def cut_to_a_third(path):
    data = path.read_bytes()
    cut = path.with_name(f"cut-{path.name}")
    cut.write_bytes(data[: len(data) // 3])
    return cut


@pytest.mark.parametrize("subtype", ["PCM_16", "PCM_24", "FLOAT"])
@pytest.mark.parametrize("channels", [1, 2])
def test_a_wav_cut_to_a_third_is_named_with_the_frames_read(tmp_path, caplog, subtype, channels):
    """24-bit and float files come out as WAVE_FORMAT_EXTENSIBLE from many writers (sox, recorders):
    libsndfile calls them WAVEX, not WAV, and they once passed unnoticed."""
    signal = np.stack([tone(3.0, 16000)] * channels, axis=1)
    sf.write(tmp_path / "whole.wav", signal, 16000, subtype=subtype, format="WAV")
    cut = cut_to_a_third(tmp_path / "whole.wav")
    if subtype == "PCM_24":  # the extensible header sox writes
        with sf.SoundFile(tmp_path / "wavex.wav", "w", 16000, channels, subtype=subtype, format="WAVEX") as file:
            file.write(signal)
        cut = cut_to_a_third(tmp_path / "wavex.wav")
        assert sf.info(cut).format == "WAVEX"
    with caplog.at_level(logging.WARNING):
        audio = load_audio(cut)
    truncation = audio_module.find_truncation(cut)
    assert truncation.frames_declared == 48000 and abs(truncation.frames_read - 16000) < 50
    assert len(audio) == truncation.frames_read
    assert f"{cut}: truncated WAV: read {truncation.frames_read} of the 48000 frames" in caplog.text
    assert audio_module.find_truncation(tmp_path / "whole.wav") is None


def test_a_truncated_mp3_is_named_and_not_padded_with_repeats(tmp_path, caplog):
    import shutil
    import subprocess

    if shutil.which("ffmpeg") is None:
        pytest.skip("ffmpeg missing: no MP3 to cut")
    sf.write(tmp_path / "whole.wav", tone(3.0, 16000), 16000, subtype="PCM_16")
    subprocess.run(["ffmpeg", "-nostdin", "-loglevel", "error", "-i", str(tmp_path / "whole.wav"), "-c:a", "libmp3lame",
                    "-b:a", "64k", str(tmp_path / "whole.mp3")], check=True)
    whole = load_audio(tmp_path / "whole.mp3")
    cut = cut_to_a_third(tmp_path / "whole.mp3")
    with caplog.at_level(logging.WARNING):
        audio = load_audio(cut)
    truncation = audio_module.find_truncation(cut)
    assert truncation is not None and truncation.frames_declared == len(whole) == 48000
    assert len(audio) == truncation.frames_read < 0.4 * len(whole)  # not the declared length, refilled
    assert f"{cut}: truncated MP3 file: read {truncation.frames_read} of the 48000 frames" in caplog.text
    assert audio_module.find_truncation(tmp_path / "whole.mp3") is None


def test_streamed_wav_with_placeholder_size_is_not_called_truncated(tmp_path, wav_bytes_16k, caplog):
    data = bytearray(wav_bytes_16k)
    data[4:8] = data[40:44] = b"\xff\xff\xff\xff"  # what a writer that cannot seek leaves
    (tmp_path / "stream.wav").write_bytes(bytes(data))
    with caplog.at_level(logging.WARNING):
        assert len(load_audio(tmp_path / "stream.wav")) == 16000
    assert "truncated" not in caplog.text


def write_nan(path):
    x = tone(0.1, 16000)
    x[100] = np.nan
    sf.write(path, x, 16000, subtype="FLOAT")


def write_inf(path):
    x = tone(0.1, 16000)
    x[5] = -np.inf
    sf.write(path, x, 16000, subtype="FLOAT")


BAD_FILES = {
    "missing": (lambda path: None, "no such file"),
    "directory": (lambda path: path.mkdir(), "is a directory"),
    "empty": (lambda path: path.write_bytes(b""), "empty file"),
    "not audio": (lambda path: path.write_text("this is a text file, not a sound\n" * 20), "not an audio file"),
    "zero length": (lambda path: sf.write(path, np.zeros(0, np.float32), 16000), "no audio samples"),
    "header only": (lambda path: path.write_bytes(_header_only()), "truncated WAV"),
    "nan": (write_nan, "NaN or infinite"),
    "inf": (write_inf, "NaN or infinite"),
}


def _header_only() -> bytes:
    import io

    buffer = io.BytesIO()
    sf.write(buffer, tone(1.0, 16000), 16000, format="WAV", subtype="PCM_16")
    return buffer.getvalue()[:44]


@pytest.mark.parametrize("case", sorted(BAD_FILES))
def test_bad_input_raises_echo_error_naming_the_file(tmp_path, case):
    make, message = BAD_FILES[case]
    path = tmp_path / "input.wav"
    make(path)
    with pytest.raises(EchoError) as caught:
        load_audio(path)
    assert caught.value.path == str(path)
    assert message in caught.value.message
    assert "\n" not in str(caught.value)


def test_long_file_memory_stays_near_the_output_size(tmp_path, monkeypatch):
    """3 min of 48 kHz stereo: reading it whole as float32 would take 6x the 16 kHz result."""
    seconds = 180
    rng = np.random.default_rng(1)
    with sf.SoundFile(tmp_path / "long.wav", "w", 48000, 2, subtype="PCM_16") as file:
        for _ in range(seconds // 10):
            file.write(rng.integers(-3000, 3000, size=(480000, 2), dtype=np.int16))
    tracemalloc.start()
    try:
        y = load_audio(tmp_path / "long.wav")
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert len(y) == seconds * SAMPLE_RATE
    assert peak < 2 * y.nbytes, f"peak {peak / 1e6:.0f} MB for a {y.nbytes / 1e6:.0f} MB result"


def test_raw_pcm_without_a_whole_sample_is_an_error(tmp_path):
    (tmp_path / "a.pcm").write_bytes(b"\x01")
    with pytest.raises(EchoError, match="holds no whole 1-channel 16-bit sample"):
        load_audio(tmp_path / "a.pcm")
