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
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    _add_features_command(subparsers)
    _add_plot_command(subparsers)
    _add_demo_command(subparsers)
    return parser


def _add_feature_settings(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--f0-method", default="dio", choices=["dio", "harvest", "praat", "pyin"],
                        help="pitch tracker (default: dio = WORLD DIO + StoneMask)")
    parser.add_argument("--f0-floor", type=float, default=60.0, metavar="HZ", help="lowest f0 searched (default 60)")
    parser.add_argument("--f0-ceil", type=float, default=600.0, metavar="HZ", help="highest f0 searched (default 600)")
    parser.add_argument("--cache-dir", metavar="DIR", help="reuse/store features here, keyed by file content and settings")


def _feature_settings(args: argparse.Namespace):
    from echoasr.features import FeatureSettings

    return FeatureSettings(f0_method=args.f0_method, f0_floor=args.f0_floor, f0_ceil=args.f0_ceil)


def _add_features_command(subparsers) -> None:
    parser = subparsers.add_parser(
        "features", help="extract frame features from audio files and summarise them",
        description="Extract 10 ms frame features (16 kHz mono) and print shapes, duration and f0 statistics. "
        "Reads wav/flac/ogg/mp3 and raw 16-bit little-endian PCM (.pcm/.raw).",
    )
    parser.add_argument("audio", nargs="+", metavar="AUDIO")
    parser.add_argument("--features", default="mel,f0,harmonic,aperiodic,phase,waveform",
                        help="comma-separated subset of mel,f0,harmonic,aperiodic,phase,waveform (default: all)")
    parser.add_argument("--json", action="store_true", help="one JSON object per file instead of text")
    parser.add_argument("--out", metavar="PATH",
                        help="save arrays: FILE.npz for one input; a folder (one STEM.npz each) for several")
    parser.add_argument("--pcm-rate", type=int, default=16000, metavar="HZ", help="sample rate of .pcm/.raw input (default 16000)")
    parser.add_argument("--pcm-channels", type=int, default=1, metavar="N", help="channels of .pcm/.raw input (default 1)")
    _add_feature_settings(parser)

    def handler(args: argparse.Namespace) -> int:
        from echoasr.features import command

        return command.run(
            args.audio, [name.strip() for name in args.features.split(",") if name.strip()],
            _feature_settings(args), as_json=args.json, out=args.out, cache_dir=args.cache_dir,
            pcm_sample_rate=args.pcm_rate, pcm_channels=args.pcm_channels,
        )

    parser.set_defaults(handler=handler)


def _add_plot_command(subparsers) -> None:
    parser = subparsers.add_parser("plot", help="draw pictures of audio and features")
    kinds = parser.add_subparsers(dest="plot_kind", metavar="KIND", required=True)
    pitch = kinds.add_parser("pitch", help="waveform, spectrogram and f0 track with voicing",
                             description="Draw waveform, log-mel spectrogram and the f0 track with voicing.")
    pitch.add_argument("audio", metavar="AUDIO")
    pitch.add_argument("--out", required=True, metavar="FILE.png")
    _add_feature_settings(pitch)

    def handler(args: argparse.Namespace) -> int:
        from echoasr.plots import plot_pitch_file

        print(plot_pitch_file(args.audio, args.out, _feature_settings(args), args.cache_dir))
        return 0

    pitch.set_defaults(handler=handler)


def _add_demo_command(subparsers) -> None:
    parser = subparsers.add_parser("demo", help="run the toolkit end to end on generated speech")
    parser.add_argument("--out", default="demo", metavar="DIR", help="output folder (default: demo)")

    def handler(args: argparse.Namespace) -> int:
        from echoasr import demo

        return demo.run(args.out)

    parser.set_defaults(handler=handler)


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
