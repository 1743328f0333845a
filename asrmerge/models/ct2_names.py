"""CTranslate2 Whisper variables to transformers' `WhisperForConditionalGeneration` names, and the geometry read from
them (asrmerge.models.ct2_import builds the model from the result).

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

import logging
import re
from collections.abc import Mapping, Sequence

import numpy as np

log = logging.getLogger(__name__)

# Standard Whisper sizes (d_model → attention heads), used when the file does not store `num_heads`.
WHISPER_HEADS_BY_WIDTH: dict[int, int] = {384: 6, 512: 8, 768: 12, 1024: 16, 1280: 20}

# CTranslate2 activation enum value for GELU (common_spec.Activation), the only one Whisper uses.
_CT2_GELU = 3


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
