"""Tone errors of a positive-control experiment (scripts/positive-control): syllable, base syllable
and tone error rates of every run and configuration, and the plan's contrasts tested on the tone
error rate (echoasr.experiments.tones); writes OUT/tones.json and OUT/tones.md and prints the
conclusion.

    .venv/bin/python scripts/summarize_tones.py [runs/tones] [--plan tones]
"""

from __future__ import annotations

import argparse
import sys

from echoasr.errors import EchoError
from echoasr.experiments.plans import load_plan
from echoasr.experiments.tones import collect_runs, summarize, write_summary


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("out", nargs="?", default="runs/tones", help="the experiment folder (default runs/tones)")
    parser.add_argument("--plan", default="tones", help="the plan it ran, for its families (default tones)")
    args = parser.parse_args(argv)
    try:
        summary = summarize(load_plan(args.plan), collect_runs(args.out))
        paths = write_summary(summary, args.out)
    except EchoError as error:
        print(f"summarize_tones: error: {error}", file=sys.stderr)
        return 2
    print(summary["conclusion"])
    print(f"written: {', '.join(map(str, paths))}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
