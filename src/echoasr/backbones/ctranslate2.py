"""Reader of CTranslate2 model files (`model.bin`), without the CTranslate2 runtime.

The layout (binary version 6, written by `ctranslate2.specs.model_spec.ModelSpec._serialize`),
little-endian: `uint32` binary version, string spec name, `uint32` spec revision, `uint32`
number of variables, then per variable: string name, `uint8` rank, rank x `uint32` dims, `uint8`
dtype id, `uint32` byte count, the raw bytes; then `uint32` number of aliases and (alias, target)
string pairs. A string is a `uint16` length that counts a trailing NUL, then the bytes and the NUL.

Quantised models add `<name>_scale` variables; the reader returns every variable as stored and
leaves dequantisation to the caller (the packaged Whisper base is float16, without scales).
"""

from __future__ import annotations

import os
import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from echoasr.errors import EchoError

SUPPORTED_BINARY_VERSIONS = (5, 6)
# The DataType enum of ctranslate2's types.h, in order; bfloat16 arrives as raw uint16 bits.
DTYPES = (np.float32, np.int8, np.int16, np.int32, np.float16, "bfloat16")


@dataclass
class CTranslate2Model:
    spec: str  # e.g. "WhisperSpec"
    revision: int
    binary_version: int
    variables: dict[str, np.ndarray]  # name -> array (scalars as 0-d arrays)
    aliases: dict[str, str]  # alias -> the variable it stands for

    def get(self, name: str) -> np.ndarray:
        """A variable by its name or an alias; KeyError names what is missing."""
        name = self.aliases.get(name, name)
        if name not in self.variables:
            raise KeyError(f"the model has no variable {name!r}")
        return self.variables[name]


class _Reader:
    def __init__(self, data: memoryview, path: Path):
        self.data, self.offset, self.path = data, 0, path

    def take(self, size: int) -> memoryview:
        end = self.offset + size
        if end > len(self.data):
            raise EchoError(f"truncated CTranslate2 file (needs {end:,} bytes, has {len(self.data):,})", self.path)
        chunk = self.data[self.offset : end]
        self.offset = end
        return chunk

    def unpack(self, fmt: str) -> tuple:
        return struct.unpack("<" + fmt, self.take(struct.calcsize("<" + fmt)))

    def string(self) -> str:
        (length,) = self.unpack("H")
        raw = bytes(self.take(length))
        if not raw.endswith(b"\0"):
            raise EchoError("not a CTranslate2 file (a string lacks its terminating NUL)", self.path)
        return raw[:-1].decode("utf-8")


def read_model(path: str | os.PathLike) -> CTranslate2Model:
    """Parse a CTranslate2 `model.bin` file (see :func:`parse_model`)."""
    try:
        data = Path(path).read_bytes()
    except OSError as error:
        raise EchoError(f"cannot read the model: {error.strerror}", path) from None
    return parse_model(data, path)


def parse_model(data: bytes, path: str | os.PathLike) -> CTranslate2Model:
    """Parse the bytes of a CTranslate2 model; refuses (EchoError naming `path`) a truncated or
    foreign file. The arrays are copies: nothing refers to `data` afterwards."""
    data = memoryview(data)
    reader = _Reader(data, Path(path))
    (version,) = reader.unpack("I")
    if version not in SUPPORTED_BINARY_VERSIONS:
        raise EchoError(f"not a supported CTranslate2 model (binary version {version}; "
                        f"supported {', '.join(map(str, SUPPORTED_BINARY_VERSIONS))})", path)
    spec = reader.string()
    (revision,) = reader.unpack("I")
    (count,) = reader.unpack("I")
    variables: dict[str, np.ndarray] = {}
    for _ in range(count):
        name = reader.string()
        (rank,) = reader.unpack("B")
        shape = reader.unpack(f"{rank}I") if rank else ()
        dtype_id, size = reader.unpack("BI")
        if dtype_id >= len(DTYPES):
            raise EchoError(f"variable {name!r} has an unknown dtype id {dtype_id}", path)
        dtype = DTYPES[dtype_id]
        raw = reader.take(size)
        if dtype == "bfloat16":  # numpy has no bfloat16: widen the bits to float32
            array = (np.frombuffer(raw, dtype=np.uint16).astype(np.uint32) << 16).view(np.float32)
        else:
            array = np.frombuffer(raw, dtype=dtype).copy()
        if array.size != int(np.prod(shape)):
            raise EchoError(f"variable {name!r}: {size} bytes do not hold shape {shape}", path)
        variables[name] = array.reshape(shape)
    (alias_count,) = reader.unpack("I")
    aliases = {}
    for _ in range(alias_count):
        alias = reader.string()
        aliases[alias] = reader.string()
    if reader.offset != len(data):
        raise EchoError(f"{len(data) - reader.offset:,} unexpected bytes after the last alias", path)
    return CTranslate2Model(spec, revision, version, variables, aliases)
