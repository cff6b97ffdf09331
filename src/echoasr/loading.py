"""The one loader of model folders, used by evaluation, transcription, export, LM tuning,
fine-tuning (``--init``) and the experiments.

A model folder is complete (``model.safetensors``: every weight) or a delta on a named backbone
(``delta.safetensors``: what differs from the backbone, :mod:`echoasr.backbones.delta`; the
backbone is built from the wheels at first use). Both load into the same float32
`EchoForConditionalGeneration`; a delta loads strictly: every tensor of the delta must exist in
the model its ``config.json`` describes, and every weight it leaves out must come from the backbone.
"""

from __future__ import annotations

import os
from pathlib import Path

from echoasr.errors import EchoError
from echoasr.processor import DELTA_FILE, WEIGHTS_FILE, SpeechProcessor, quiet_progress, resolve_model_dir

def is_delta(folder: str | os.PathLike) -> bool:
    """Whether ``folder`` stores its weights as a delta on a backbone; a folder holding both
    weights files is refused (which of them is the model would be a guess)."""
    folder = Path(folder)
    delta = (folder / DELTA_FILE).is_file()
    if delta and (folder / WEIGHTS_FILE).is_file():
        raise EchoError(f"holds both {WEIGHTS_FILE} and {DELTA_FILE}: remove the one that is not the model", folder)
    return delta


def folder_state(folder: str | os.PathLike) -> dict:
    """Every stored weight of a model folder by name (a delta composed with its backbone)."""
    from safetensors.torch import load_file

    if is_delta(folder):
        from echoasr.backbones.delta import composed_state

        return composed_state(folder)[0]
    return load_file(str(Path(folder) / WEIGHTS_FILE))


def load_model(folder: str | os.PathLike):
    """The float32 `EchoForConditionalGeneration` of a model folder (not a run: see
    :func:`echoasr.processor.resolve_model_dir`), on the CPU, adapters as stored."""
    import torch

    from echoasr.model import EchoConfig, EchoForConditionalGeneration

    if not is_delta(folder):
        try:
            with quiet_progress():
                # float32 whatever the stored dtype (an export keeps float16 weights): CPU inference needs it
                return EchoForConditionalGeneration.from_pretrained(folder, dtype=torch.float32)
        except (OSError, ValueError) as error:
            raise EchoError(f"cannot load the model: {error}", folder) from None
    from echoasr.backbones.delta import composed_state

    try:
        config = EchoConfig.from_pretrained(folder)
    except (OSError, ValueError, TypeError) as error:
        raise EchoError(f"cannot read the model configuration: {error}", folder) from None
    model = EchoForConditionalGeneration(config).float()
    state, from_delta = composed_state(folder)
    try:
        missing, unexpected = model.load_state_dict(state, strict=False)
    except RuntimeError as error:  # a shape that the configuration does not give
        raise EchoError(f"the delta does not fit its config.json: {' '.join(str(error).split())[:300]}", folder) from None
    foreign = sorted(set(unexpected) & from_delta)
    if foreign:
        raise EchoError(f"{DELTA_FILE} holds tensors the model of config.json does not have: "
                        f"{', '.join(foreign[:4])}{' ...' if len(foreign) > 4 else ''}", folder)
    if unexpected:
        raise EchoError(f"the backbone's tensors {', '.join(sorted(unexpected)[:4])} do not fit config.json", folder)
    if missing:
        raise EchoError(f"neither {DELTA_FILE} nor the backbone holds {', '.join(sorted(missing)[:4])}"
                        f"{' ...' if len(missing) > 4 else ''}", folder)
    return model


def load_pretrained(path: str | os.PathLike, device: str | None = None, int8: bool = False,
                    merge_adapters: bool = True):
    """(model in eval mode, processor) from a run folder, a final model folder, a checkpoint, an
    export (float16 weights, :mod:`echoasr.export`) or a delta export; the model is float32
    whatever the stored dtype and goes to ``device`` (default: a CUDA GPU if there is one, else the
    CPU), or with ``int8`` to the CPU with its Linear layers dynamically quantised
    (:func:`echoasr.model.quantize_int8`). Low-rank adapters are folded into their weights
    (``merge_adapters``: the same function with fewer products) unless the caller needs them apart.

    A complete folder also loads through transformers' Auto classes once ``echoasr.processor`` is
    imported: ``AutoModelForSpeechSeq2Seq.from_pretrained(folder)`` and
    ``AutoProcessor.from_pretrained(folder)`` (a :class:`SpeechProcessor`); a delta needs this loader."""
    import torch

    folder = resolve_model_dir(path)
    processor = SpeechProcessor.from_pretrained(folder)
    model = load_model(folder)
    if merge_adapters:
        model.merge_adapters()
    if int8:
        from echoasr.model import quantize_int8

        if device not in (None, "cpu"):
            raise EchoError(f"int8 decoding runs on the CPU only, not {device}")
        return quantize_int8(model.eval()), processor
    if device is None:
        device = "cuda" if torch.cuda.is_available() else "cpu"
    model.to(device)
    return model.eval(), processor
