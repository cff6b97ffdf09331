"""The Echo model: tensors in, tensors out (imports nothing from features/, data/ or the CLI).

    from echoasr import EchoConfig, EchoForConditionalGeneration
    model = EchoForConditionalGeneration(EchoConfig(vocab_size=64, features=["mel", "f0"],
                                                    rotary_theta_mode="phase", rotary_radius="bounded"))
    out = model(features={"mel": mel, "f0": f0, "voiced": voiced}, feature_lengths=lengths, labels=labels)
    ids = model.generate(features=..., feature_lengths=..., num_beams=4)
"""

from .configuration import EchoConfig
from .generation import ctc_greedy_decode
from .modeling import EchoForConditionalGeneration, EchoSeq2SeqLMOutput
from .presets import PRESETS, preset_config
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
]
