"""What turns audio into model inputs and ids into text, saved beside the model weights.

A :class:`SpeechProcessor` bundles the tokenizer, the names of the features to extract and the
:class:`~echoasr.features.FeatureSettings`, plus the longest utterance the model was trained to
take. The training run passes it to the Trainer as ``processing_class``, so every checkpoint and
the final model folder hold it (``processor.json`` + ``tokenizer/``) and any of them can be
loaded on its own with :func:`echoasr.loading.load_pretrained`.

A complete model folder is ``model.save_pretrained(folder)`` (config, weights, generation config)
plus ``processor.save_pretrained(folder)`` (``processor.json``, ``tokenizer/``). Importing this
module registers :class:`SpeechProcessor` with transformers' ``AutoProcessor`` for Echo configs
(and, through :mod:`echoasr.model`, the config and model with ``AutoConfig`` and
``AutoModelForSpeechSeq2Seq``), so the folder also loads through the Auto classes.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import os
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from echoasr import atomic
from echoasr.errors import EchoError
from echoasr.features import FeatureSettings, check_feature_names, extract
from echoasr.text import Tokenizer, load_tokenizer

log = logging.getLogger(__name__)

PROCESSOR_FILE = "processor.json"
TOKENIZER_DIR = "tokenizer"
WEIGHTS_FILE = "model.safetensors"
# The weights of a delta folder: only what differs from a named backbone (echoasr.backbones.delta).
DELTA_FILE = "delta.safetensors"


@dataclass
class SpeechProcessor:
    tokenizer: Tokenizer
    features: tuple[str, ...]  # names for echoasr.features.extract ("f0" also gives "voiced")
    settings: FeatureSettings = dataclasses.field(default_factory=FeatureSettings)
    max_duration: float = 20.0  # seconds; longer audio is cut into chunks (transcribe) or skipped
    normalize: tuple[str, ...] = ()  # features normalised per utterance and channel in the collator

    def collator(self, spec_augment=None):
        from echoasr.data.collate import SpeechCollator

        return SpeechCollator(spec_augment, normalize=self.normalize)

    def extract(self, audio: np.ndarray) -> dict[str, np.ndarray]:
        return extract(audio, self.features, self.settings)

    def decode(self, ids) -> str:
        return self.tokenizer.decode(ids)

    def save_pretrained(self, directory: str | os.PathLike) -> None:
        directory = Path(directory)
        self.tokenizer.save(directory / TOKENIZER_DIR)
        document = {
            "features": list(self.features),
            "feature_settings": dataclasses.asdict(self.settings),
            "max_duration": self.max_duration,
            "normalize": list(self.normalize),
        }
        atomic.write_text(directory / PROCESSOR_FILE, json.dumps(document, indent=1) + "\n")

    @classmethod
    def from_pretrained(cls, directory: str | os.PathLike, **hub_options) -> SpeechProcessor:
        """``hub_options``: what ``AutoProcessor.from_pretrained`` passes on (cache_dir,
        revision...); a local folder needs none, so they are ignored."""
        path = Path(directory) / PROCESSOR_FILE
        try:
            document = json.loads(path.read_text(encoding="utf-8"))
            settings = FeatureSettings(**document["feature_settings"])
            features = check_feature_names(document["features"])
            max_duration = float(document["max_duration"])
            normalize = tuple(document.get("normalize", ()))
        except FileNotFoundError:
            raise EchoError(f"no {PROCESSOR_FILE} here: not an echoasr model folder", directory) from None
        except (ValueError, KeyError, TypeError) as error:
            raise EchoError(f"not a processor file: {error}", path) from None
        return cls(load_tokenizer(Path(directory) / TOKENIZER_DIR), features, settings, max_duration, normalize)


def _register_auto_processor() -> None:
    from transformers import AutoProcessor

    from echoasr.model import EchoConfig  # importing the model package registers config and model

    AutoProcessor.register(EchoConfig, SpeechProcessor, exist_ok=True)


_register_auto_processor()


def model_features(config) -> tuple[str, ...]:
    """Feature names to extract for an `EchoConfig`: its inputs, plus f0 when a pitch mechanism
    reads it without f0 being an input."""
    names = list(config.features)
    if config.uses_pitch and "f0" not in names:
        names.append("f0")
    return tuple(names)


def has_weights(folder: Path) -> bool:
    """Whether ``folder`` holds a model's weights: complete, or a delta on a backbone."""
    return (folder / WEIGHTS_FILE).is_file() or (folder / DELTA_FILE).is_file()


def resolve_model_dir(path: str | os.PathLike) -> Path:
    """The folder holding the weights: ``path`` itself (a final model, a checkpoint or a delta), or
    for a run folder without a final model (a run still going or killed), its latest checkpoint."""
    path = Path(path)
    if not path.exists():
        raise EchoError("no such model folder", path)
    if has_weights(path):
        return path
    checkpoints = sorted(
        (p for p in path.glob("checkpoint-*") if (p / WEIGHTS_FILE).is_file() and re.fullmatch(r"checkpoint-\d+", p.name)),
        key=lambda p: int(p.name.split("-")[1]),
    )
    if not checkpoints:
        raise EchoError(f"no model here (neither {WEIGHTS_FILE}, {DELTA_FILE} nor checkpoint-N/ folders)", path)
    log.warning("%s has no final model; using its latest checkpoint %s", path, checkpoints[-1].name)
    return checkpoints[-1]


@contextlib.contextmanager
def quiet_progress():
    """No transformers progress bars inside: a bar for loading or saving a few MB of weights is noise."""
    from transformers.utils import logging as hf_logging

    bars = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if bars:
            hf_logging.enable_progress_bar()
