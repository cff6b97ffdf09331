"""The Echo model: tensors in, tensors out (imports nothing from features/, data/ or the CLI).

    from echoasr import EchoConfig, EchoForConditionalGeneration
    model = EchoForConditionalGeneration(EchoConfig(vocab_size=64, features=["mel", "f0"],
                                                    rotary_theta_mode="phase", rotary_radius="bounded"))
    out = model(features={"mel": mel, "f0": f0, "voiced": voiced}, feature_lengths=lengths, labels=labels)
    ids = model.generate(features=..., feature_lengths=..., num_beams=4)

Importing this package registers the model with transformers' Auto classes (model type
``"echo"``), so ``AutoModelForSpeechSeq2Seq.from_pretrained(folder)`` loads a saved model.
"""

from .configuration import EchoConfig
from .generation import ctc_greedy_decode
from .modeling import EchoForConditionalGeneration, EchoSeq2SeqLMOutput
from .presets import PRESETS, preset_config
from .quantization import quantize_int8
from .rotary import PitchRotary, apply_rotary, apply_rotary_complex

__all__ = [
    "EchoConfig",
    "EchoForConditionalGeneration",
    "EchoSeq2SeqLMOutput",
    "PRESETS",
    "PitchRotary",
    "apply_rotary",
    "apply_rotary_complex",
    "ctc_greedy_decode",
    "preset_config",
    "quantize_int8",
]


def _register_auto_classes() -> None:
    # exist_ok: a re-import (importlib.reload, two test modules) must not fail on the second call.
    from transformers import AutoConfig, AutoModelForSpeechSeq2Seq

    AutoConfig.register(EchoConfig.model_type, EchoConfig, exist_ok=True)
    AutoModelForSpeechSeq2Seq.register(EchoConfig, EchoForConditionalGeneration, exist_ok=True)


_register_auto_classes()
