import subprocess
import sys

from echoasr import __version__
from echoasr.cli import main


def test_version_flag_prints_version(capsys):
    try:
        main(["--version"])
    except SystemExit as exit_:
        assert exit_.code == 0
    assert __version__ in capsys.readouterr().out


def test_console_entry_point_runs():
    result = subprocess.run([sys.executable, "-m", "echoasr", "--help"], capture_output=True, text=True)
    assert result.returncode == 0
    assert "usage: echoasr" in result.stdout


def test_experiment_test_set_option_errors_are_one_line(tmp_path, capsys):
    from echoasr.cli import main

    assert main(["experiment", "--plan", "quick", "--data", str(tmp_path), "--out", str(tmp_path / "out"),
                 "--test", "game"]) == 2
    assert capsys.readouterr().err.strip() == "echoasr: error: --test 'game': expected NAME=MANIFEST"
    assert main(["experiment", "--plan", "quick", "--data", str(tmp_path), "--out", str(tmp_path / "out"),
                 "--report-only"]) == 2
    error = capsys.readouterr().err.strip()
    assert error.startswith("echoasr: error:") and "train manifest" in error and "\n" not in error
