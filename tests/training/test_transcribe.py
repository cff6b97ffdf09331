import numpy as np
import pytest
import soundfile

from echoasr.cli import main
from echoasr.transcribe import silence_cuts

RATE = 16000


def bursts(seconds_on: list[float], gap: float = 0.4, seed: int = 0) -> tuple[np.ndarray, list[float]]:
    """Noise bursts separated by silent gaps; returns the audio and the gaps' centres (s)."""
    rng = np.random.default_rng(seed)
    pieces, centres, clock = [], [], 0.0
    for index, seconds in enumerate(seconds_on):
        pieces.append(0.3 * rng.standard_normal(int(seconds * RATE)))
        clock += seconds
        if index < len(seconds_on) - 1:
            pieces.append(np.zeros(int(gap * RATE)))
            centres.append(clock + gap / 2)
            clock += gap
    return np.concatenate(pieces).astype(np.float32), centres


def test_short_audio_is_one_chunk():
    audio = np.zeros(RATE * 3, dtype=np.float32)
    assert silence_cuts(audio, 5.0) == [(0, len(audio))]


def test_long_audio_is_cut_inside_silences():
    audio, gaps = bursts([2.5, 3.0, 2.0, 3.5, 2.2, 1.0])
    cuts = silence_cuts(audio, 6.0)
    assert cuts[0][0] == 0 and cuts[-1][1] == len(audio)
    assert all(a[1] == b[0] for a, b in zip(cuts, cuts[1:]))  # contiguous, nothing lost
    assert all(end - start <= 6.0 * RATE for start, end in cuts)
    for _, end in cuts[:-1]:
        assert min(abs(end / RATE - centre) for centre in gaps) < 0.2  # cut in a gap


def test_transcribe_cli_one_line_per_file_and_long_files(trained_run, tts_corpus, tmp_path, capsys, caplog):
    import logging

    run, _ = trained_run
    first = tts_corpus / "wav" / "u0.wav"
    # A long file: six utterances with pauses, longer than the chunk limit.
    pieces = []
    for index in range(6):
        audio, rate = soundfile.read(tts_corpus / "wav" / f"u{index}.wav", dtype="float32")
        pieces += [audio, np.zeros(int(0.5 * rate), dtype=np.float32)]
    long_file = tmp_path / "long.wav"
    soundfile.write(long_file, np.concatenate(pieces), rate)
    caplog.set_level(logging.INFO, logger="echoasr.transcribe")
    assert main(["transcribe", "--model", str(run), str(first), str(long_file), "--beam", "2",
                 "--chunk-seconds", "4"]) == 0
    captured = capsys.readouterr()
    lines = captured.out.strip("\n").split("\n")
    assert len(lines) == 2
    assert lines[0].split("\t")[0] == str(first) and lines[1].split("\t")[0] == str(long_file)
    assert any("cut into" in record.getMessage() and "long.wav" in record.getMessage() for record in caplog.records)


def test_transcribe_bad_file_is_one_line_error(trained_run, tmp_path, capsys):
    run, _ = trained_run
    (tmp_path / "empty.wav").write_bytes(b"")
    assert main(["transcribe", "--model", str(run), str(tmp_path / "empty.wav")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "empty.wav" in err[0]


@pytest.mark.parametrize("seconds", [0.0005])
def test_too_short_chunks_are_refused(seconds):
    from echoasr.errors import EchoError

    with pytest.raises(EchoError):
        silence_cuts(np.zeros(RATE, dtype=np.float32), seconds)
