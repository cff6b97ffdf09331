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
