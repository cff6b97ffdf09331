"""`echoasr features` and `echoasr plot pitch`: output, --out rule and the one-line errors."""

import json
import subprocess
import sys

import numpy as np
import pytest
import soundfile as sf

from echoasr.cli import main


def tone_file(path, rate=16000, channels=1, seconds=0.5, hz=180.0):
    t = np.arange(int(seconds * rate)) / rate
    mono = sum(0.3 / k * np.sin(2 * np.pi * k * hz * t) for k in range(1, 4))
    sf.write(path, np.repeat(mono[:, None], channels, axis=1), rate, subtype="PCM_16")
    return path


def run_cli(capsys, *argv):
    code = main(list(map(str, argv)))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_text_summary(tmp_path, capsys):
    path = tone_file(tmp_path / "a.wav")
    code, out, err = run_cli(capsys, "features", path)
    assert code == 0 and err == ""
    assert "0.50 s, 51 frames" in out and "mel        80 x 51" in out and "waveform   160 x 51" in out
    assert "f0 (dio): voiced" in out and "median 180.0 Hz" in out


@pytest.mark.parametrize("rate,channels", [(8000, 1), (48000, 1), (44100, 2)])
def test_json_summary_for_other_rates_and_stereo(tmp_path, capsys, rate, channels):
    path = tone_file(tmp_path / "a.flac", rate=rate, channels=channels)
    code, out, _ = run_cli(capsys, "features", path, "--features", "mel,f0", "--json")
    summary = json.loads(out)
    assert code == 0 and summary["duration_s"] == pytest.approx(0.5, abs=1e-3)
    assert summary["shapes"] == {"mel": [80, 51], "f0": [51], "voiced": [51]}
    assert summary["voiced_fraction"] > 0.8 and summary["f0_median_hz"] == pytest.approx(180.0, rel=0.01)


def test_silence_is_all_unvoiced_without_nan(tmp_path, capsys):
    path = tmp_path / "quiet.wav"
    sf.write(path, np.zeros(16000, np.int16), 16000)
    code, out, _ = run_cli(capsys, "features", path, "--json", "--out", tmp_path / "quiet.npz")
    summary = json.loads(out)
    assert code == 0 and summary["voiced_fraction"] == 0.0 and summary["f0_median_hz"] is None
    with np.load(tmp_path / "quiet.npz") as arrays:
        assert sorted(arrays) == sorted(summary["shapes"])
        assert all(np.isfinite(arrays[key]).all() for key in arrays)


def test_out_rule_one_file_then_a_folder(tmp_path, capsys):
    a, b = tone_file(tmp_path / "a.wav"), tone_file(tmp_path / "b.flac", hz=120.0)
    assert run_cli(capsys, "features", a, "--features", "f0", "--out", tmp_path / "one.npz")[0] == 0
    with np.load(tmp_path / "one.npz") as arrays:
        assert sorted(arrays) == ["f0", "voiced"]
    assert run_cli(capsys, "features", a, b, "--features", "mel", "--out", tmp_path / "many")[0] == 0
    assert sorted(p.name for p in (tmp_path / "many").iterdir()) == ["a.npz", "b.npz"]


def test_out_refuses_inputs_with_the_same_stem(tmp_path, capsys):
    (tmp_path / "x").mkdir()
    a, b = tone_file(tmp_path / "a.wav"), tone_file(tmp_path / "x" / "a.wav")
    code, out, err = run_cli(capsys, "features", a, b, "--out", tmp_path / "many")
    assert code == 2 and out == "" and "same file stem" in err
    assert not (tmp_path / "many").exists()


def test_cache_dir_is_used(tmp_path, capsys):
    path = tone_file(tmp_path / "a.wav")
    run_cli(capsys, "features", path, "--features", "mel", "--cache-dir", tmp_path / "cache")
    assert len(list((tmp_path / "cache").rglob("mel.npy"))) == 1


def _bad_inputs(tmp_path):
    good = tone_file(tmp_path / "good.wav")
    header = good.read_bytes()[:44]
    nan = np.full(160, np.nan, np.float32)
    cases = {
        "missing": (tmp_path / "missing.wav", "no such file"),
        "empty": (tmp_path / "empty.wav", "empty file"),
        "not audio": (tmp_path / "notes.wav", "not an audio file"),
        "truncated to the header": (tmp_path / "cut.wav", "truncated WAV"),
        "zero length": (tmp_path / "zero.wav", "no audio samples"),
        "nan": (tmp_path / "nan.wav", "NaN or infinite"),
        "inf": (tmp_path / "inf.wav", "NaN or infinite"),
    }
    cases["empty"][0].write_bytes(b"")
    cases["not audio"][0].write_text("hello, not a sound\n" * 10)
    cases["truncated to the header"][0].write_bytes(header)
    sf.write(cases["zero length"][0], np.zeros(0, np.float32), 16000)
    sf.write(cases["nan"][0], nan, 16000, subtype="FLOAT")
    sf.write(cases["inf"][0], np.full(160, np.inf, np.float32), 16000, subtype="FLOAT")
    return cases


BAD_CASES = ["missing", "empty", "not audio", "truncated to the header", "zero length", "nan", "inf"]


@pytest.mark.parametrize("case", BAD_CASES)
def test_bad_input_exits_2_with_one_line(tmp_path, capsys, case):
    path, message = _bad_inputs(tmp_path)[case]
    code, out, err = run_cli(capsys, "features", path)
    assert code == 2 and out == ""
    assert err.count("\n") == 1 and err.startswith(f"echoasr: error: {path}: ") and message in err


def test_bad_input_through_the_console_script_has_no_traceback(tmp_path):
    cases = _bad_inputs(tmp_path)
    for case in ("not audio", "nan"):
        path, message = cases[case]
        result = subprocess.run([sys.executable, "-m", "echoasr", "features", str(path)], capture_output=True, text=True)
        assert result.returncode == 2 and result.stdout == ""
        assert result.stderr == f"echoasr: error: {path}: {result.stderr.split(': ', 3)[3]}"
        assert message in result.stderr and "Traceback" not in result.stderr and result.stderr.count("\n") == 1


def test_truncated_wav_with_data_works_and_warns(tmp_path, capsys, caplog):
    good = tone_file(tmp_path / "good.wav")
    (tmp_path / "cut.wav").write_bytes(good.read_bytes()[: 44 + 3200])
    code, out, _ = run_cli(capsys, "features", tmp_path / "cut.wav", "--features", "mel", "--json")
    assert code == 0 and json.loads(out)["frames"] == 11
    assert "truncated WAV" in caplog.text


def test_bad_option_values_exit_2(tmp_path, capsys):
    path = tone_file(tmp_path / "a.wav")
    code, _, err = run_cli(capsys, "features", path, "--features", "mel,pitch")
    assert code == 2 and "unknown feature 'pitch'" in err
    code, _, err = run_cli(capsys, "features", path, "--f0-floor", "500", "--f0-ceil", "100")
    assert code == 2 and "f0 range" in err


def test_plot_pitch_writes_a_png(tmp_path, capsys):
    path = tone_file(tmp_path / "a.wav")
    code, out, _ = run_cli(capsys, "plot", "pitch", path, "--out", tmp_path / "pics" / "a.png", "--f0-method", "praat")
    assert code == 0 and out.strip() == str(tmp_path / "pics" / "a.png")
    assert (tmp_path / "pics" / "a.png").read_bytes().startswith(b"\x89PNG")
    assert [p.name for p in (tmp_path / "pics").iterdir()] == ["a.png"]


def test_plot_pitch_bad_input_and_bad_suffix(tmp_path, capsys):
    code, _, err = run_cli(capsys, "plot", "pitch", tmp_path / "nothing.wav", "--out", tmp_path / "x.png")
    assert code == 2 and "no such file" in err
    path = tone_file(tmp_path / "a.wav")
    code, _, err = run_cli(capsys, "plot", "pitch", path, "--out", tmp_path / "x.docx")
    assert code == 2 and "cannot write images" in err and not (tmp_path / "x.docx").exists()


def test_real_tts_recording_through_the_console_script(tts_wav, tmp_path):
    """The acceptance check: features and a pitch plot of real (synthetic-voice) speech."""
    result = subprocess.run(
        [sys.executable, "-m", "echoasr", "features", str(tts_wav), "--json", "--out", str(tmp_path / "speech.npz")],
        capture_output=True, text=True, check=True,
    )
    summary = json.loads(result.stdout)
    assert summary["duration_s"] > 2.0
    assert 0.3 < summary["voiced_fraction"] < 0.95
    assert 80.0 < summary["f0_median_hz"] < 300.0
    assert summary["shapes"]["harmonic"][1] == summary["frames"]
    picture = tmp_path / "speech.png"
    subprocess.run([sys.executable, "-m", "echoasr", "plot", "pitch", str(tts_wav), "--out", str(picture)],
                   capture_output=True, check=True)
    assert picture.read_bytes().startswith(b"\x89PNG") and picture.stat().st_size > 20_000
