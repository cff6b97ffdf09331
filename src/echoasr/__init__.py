"""Echo ASR: does pitch help a transformer recognise speech, and where should it enter the model?"""

from importlib import import_module
from typing import Any

__version__ = "0.1.0"

# Heavy modules (torch, transformers) load on first use so that `echoasr --help` stays instant.
_LAZY_EXPORTS = {
    "EchoConfig": "echoasr.model",
    "EchoForConditionalGeneration": "echoasr.model",
}

__all__ = ["__version__", *_LAZY_EXPORTS]


def __getattr__(name: str) -> Any:
    if name in _LAZY_EXPORTS:
        return getattr(import_module(_LAZY_EXPORTS[name]), name)
    raise AttributeError(f"module 'echoasr' has no attribute {name!r}")
