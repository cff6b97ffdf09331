"""The `echoasr` command. Thin: it parses arguments and calls the modules that do the work."""

from __future__ import annotations

import argparse
import logging
import sys

from echoasr import __version__
from echoasr.errors import EchoError

log = logging.getLogger("echoasr")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="echoasr",
        description="Pitch-aware speech recognition: features, data, training, evaluation.",
    )
    parser.add_argument("--version", action="version", version=f"echoasr {__version__}")
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more logging (-vv for debug)")
    parser.add_subparsers(dest="command", metavar="COMMAND")
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=[logging.WARNING, logging.INFO, logging.DEBUG][min(args.verbose, 2)],
        format="%(levelname)s %(name)s: %(message)s",
    )
    if not getattr(args, "handler", None):
        parser.print_help()
        return 0
    try:
        return args.handler(args) or 0
    except EchoError as error:
        print(f"echoasr: error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("echoasr: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
