"""A trained run to a self-contained model folder to ship: ``echoasr export RUN --out DIR``.

The folder is a complete ``save_pretrained`` folder (``config.json``, ``generation_config.json``,
``model.safetensors``, ``processor.json``, ``tokenizer/``) with the weights stored in float16 (half
the size; :func:`echoasr.processor.load_pretrained` loads them back into a float32 model), plus:

* ``lm.json`` when the run has tuned LM settings. The general English LM (``lm default``, 45 MB)
  is written as the symbol ``default`` and built on first use on the user's machine; any other
  LM file is copied beside the weights (``lm.arpa``) if it is under :data:`MAX_LM_BYTES`, else the
  export is refused (an absolute path to the exporter's disk would break elsewhere).
* ``train_config.yaml`` (the recipe) when the run has one, and ``export.json``: the source, its
  training summary (without the loss history), the stored dtype, the parameter count and the
  weights' sha256.

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


def export_model(run: str | os.PathLike, out: str | os.PathLike, dtype: str = "fp16") -> dict[str, Any]:
    """Write the model of ``run`` (a run folder, model folder or checkpoint) to ``out``; returns
    what ``export.json`` records."""
    import torch

    from echoasr.decoding import read_lm_config, write_lm_config
    from echoasr.processor import WEIGHTS_FILE, load_pretrained, quiet_progress, resolve_model_dir

    if dtype not in DTYPES:
        raise EchoError(f"unknown dtype {dtype!r} (one of {', '.join(DTYPES)})")
    source = resolve_model_dir(run)
    out = Path(out)
    if out.exists() and not (out / EXPORT_FILE).is_file():
        raise EchoError("exists and is not an earlier export: refusing to replace it", out)
    if out.resolve() == source.resolve():
        raise EchoError("the export cannot replace its own source", out)
    model, processor = load_pretrained(source, device="cpu")
    lm_settings = _portable_lm_settings(read_lm_config(source), source)
    stored = getattr(torch, DTYPES[dtype])
    state = {name: tensor.to(stored) if tensor.is_floating_point() else tensor
             for name, tensor in model.state_dict().items()}
    with atomic.atomic_dir(out) as staging:
        # config.json keeps dtype float32: the dtype the model runs in; only the stored weights are halved
        with quiet_progress():
            model.save_pretrained(staging, state_dict=state)
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
        weights = staging / WEIGHTS_FILE
        with open(weights, "rb") as file:
            sha256 = hashlib.file_digest(file, "sha256").hexdigest()
        record = {
            "source": str(source.resolve()),
            "exported": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "echoasr": __version__,
            "dtype": DTYPES[dtype],
            "parameters": sum(p.numel() for p in model.parameters()),
            "weights_bytes": weights.stat().st_size,
            "weights_sha256": sha256,
            "lm": None if lm_settings is None else lm_settings[0]["lm"],
            "train_summary": _train_summary(run_dir),
        }
        atomic.write_text(staging / EXPORT_FILE, json.dumps(record, indent=1) + "\n")
    log.info("exported %s to %s (%s, %d bytes of weights)", source, out, record["dtype"], record["weights_bytes"])
    return record


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
