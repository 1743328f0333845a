"""Whisper models: build the small demo foundation, load any transformers Whisper, write prompts.

Every model the workflow touches is a transformers `WhisperForConditionalGeneration` folder with its feature extractor
and tokenizer beside it, so the demo model and Whisper large-v3 go through the same code. The demo model uses a
tokenizer trained here; its special tokens carry Whisper's names (`<|startoftranscript|>`, `<|pt|>`, ...) so prompts
are written the same way for both.
"""

from __future__ import annotations

import json
import logging
import re
import tempfile
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import (
    AutoFeatureExtractor,
    AutoTokenizer,
    GenerationConfig,
    PreTrainedTokenizerFast,
    WhisperConfig,
    WhisperFeatureExtractor,
    WhisperForConditionalGeneration,
    WhisperTokenizer,
)

from asrmerge import layout
from asrmerge.atomic import staged_folder
from asrmerge.defaults import default
from asrmerge.models.source import is_hub_id

log = logging.getLogger(__name__)

END_OF_TEXT = "<|endoftext|>"
START_OF_TRANSCRIPT = "<|startoftranscript|>"
TRANSCRIBE = "<|transcribe|>"
TRANSLATE = "<|translate|>"
START_OF_PREV = "<|startofprev|>"
NO_TIMESTAMPS = "<|notimestamps|>"
FIRST_TIMESTAMP = "<|0.00|>"
#: Whisper's language tokens are ISO 639 codes (`<|pt|>`, `<|haw|>`); task, prompt, no-speech and timestamp tokens
#: (`<|0.00|>`) are not, though they share the `<|...|>` form.
LANGUAGE_TOKEN = re.compile(r"^<\|[a-z]{2,3}(?:-[A-Za-z]+)?\|>$")
TIMESTAMP_TOKEN = re.compile(r"^<\|\d+\.\d\d\|>$")
#: Tokens of Whisper's transcription prompt without timestamps: start, language, task, no-timestamps.
PROMPT_LENGTH = 4


def language_token(language: str) -> str:
    """Whisper's language token: `pt-BR` and `pt` share `<|pt|>`, as in Whisper."""
    return f"<|{language.split('-')[0].lower()}|>"


def train_tokenizer(texts: Iterable[str], languages: Sequence[str], vocab_size: int) -> PreTrainedTokenizerFast:
    """Byte-level BPE over the given texts with Whisper-named special tokens (one per language)."""
    specials = [END_OF_TEXT, START_OF_TRANSCRIPT, TRANSCRIBE, NO_TIMESTAMPS]
    specials += sorted({language_token(lang) for lang in languages})
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=specials,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(texts, trainer=trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=tokenizer,
        bos_token=START_OF_TRANSCRIPT,
        eos_token=END_OF_TEXT,
        pad_token=END_OF_TEXT,
        unk_token=END_OF_TEXT,
        additional_special_tokens=specials[2:],
    )


def build_small_whisper(
    tokenizer: PreTrainedTokenizerFast, architecture: Mapping[str, Any], audio_seconds: float, seed: int
) -> WhisperForConditionalGeneration:
    """A randomly initialised Whisper-architecture model sized by `architecture`, reading `audio_seconds` windows.

    Whisper's encoder halves the frame rate (100 mel frames/s → 50 positions/s), so the source length follows from
    the window. Suppression lists are emptied: they index Whisper's own vocabulary.
    """
    eot = tokenizer.convert_tokens_to_ids(END_OF_TEXT)
    sot = tokenizer.convert_tokens_to_ids(START_OF_TRANSCRIPT)
    config = WhisperConfig(
        vocab_size=len(tokenizer),
        num_mel_bins=architecture["num_mel_bins"],
        d_model=architecture["d_model"],
        encoder_layers=architecture["encoder_layers"],
        decoder_layers=architecture["decoder_layers"],
        encoder_attention_heads=architecture["attention_heads"],
        decoder_attention_heads=architecture["attention_heads"],
        encoder_ffn_dim=architecture["ffn_dim"],
        decoder_ffn_dim=architecture["ffn_dim"],
        max_source_positions=int(round(audio_seconds * 50)),
        max_target_positions=architecture["max_target_positions"],
        pad_token_id=eot,
        bos_token_id=sot,
        eos_token_id=eot,
        decoder_start_token_id=sot,
        suppress_tokens=None,
        begin_suppress_tokens=None,
        tie_word_embeddings=True,
    )
    torch.manual_seed(seed)
    model = WhisperForConditionalGeneration(config)
    model.generation_config = GenerationConfig(
        decoder_start_token_id=sot, bos_token_id=sot, eos_token_id=eot, pad_token_id=eot,
        max_length=architecture["max_target_positions"],
    )
    return model


def language_tokens(tokenizer: PreTrainedTokenizerFast) -> list[str]:
    """The tokenizer's language tokens (`<|pt|>`, ...), sorted (LANGUAGE_TOKEN: never a task or timestamp token)."""
    return sorted(t for t in tokenizer.get_vocab() if LANGUAGE_TOKEN.match(t))


def timestamp_token_ids(tokenizer: PreTrainedTokenizerFast) -> list[int]:
    """Ids of the tokenizer's timestamp tokens (`<|0.00|>` ... `<|30.00|>` in released Whisper; none in the demo's)."""
    return sorted(i for t, i in tokenizer.get_vocab().items() if TIMESTAMP_TOKEN.match(t))


def _whisper_token_order(tokenizer: PreTrainedTokenizerFast) -> list[int]:
    """Old token ids in Whisper's order (new id -> old id): every text token first, then end-of-text, start of
    transcript, the languages, transcribe and no-timestamps last, as in Whisper's own vocabulary."""
    specials = [END_OF_TEXT, START_OF_TRANSCRIPT, *language_tokens(tokenizer), TRANSCRIBE, NO_TIMESTAMPS]
    special_ids = [tokenizer.convert_tokens_to_ids(t) for t in specials]
    taken = set(special_ids)
    return [i for i in range(len(tokenizer)) if i not in taken] + special_ids


def in_whisper_token_order(
    whisper: LoadedWhisper, ctc_head: Mapping[str, torch.Tensor] | None = None
) -> tuple[LoadedWhisper, dict[str, torch.Tensor] | None]:
    """The same model with its vocabulary renumbered in Whisper's order (`_whisper_token_order`), and its CTC head's
    token rows likewise (the blank stays last).

    A permutation: every transcript is unchanged. It matters to transformers' Whisper generation, which takes every
    id after `<|notimestamps|>` for a timestamp: the demo tokenizer is trained with its special tokens first, so
    without this every text token would count as one and `pipeline("automatic-speech-recognition")` would cut the
    transcript into nonsense segments. A model already in this order with Whisper's tokenizer class is returned
    unchanged (in this order with another class, only its tokenizer is replaced).
    """
    order = _whisper_token_order(whisper.tokenizer)
    if order == list(range(len(order))) and isinstance(whisper.tokenizer, WhisperTokenizer):
        return whisper, None if ctc_head is None else dict(ctc_head)
    new_id = {old: new for new, old in enumerate(order)}
    with tempfile.TemporaryDirectory() as tmp:
        whisper.tokenizer.save_pretrained(tmp)
        spec = json.loads(Path(tmp, "tokenizer.json").read_text(encoding="utf-8"))
        spec["model"]["vocab"] = {token: new_id[i] for token, i in spec["model"]["vocab"].items()}
        for added in spec["added_tokens"]:
            added["id"] = new_id[added["id"]]
        spec["added_tokens"].sort(key=lambda added: added["id"])
        Path(tmp, "tokenizer.json").write_text(json.dumps(spec, ensure_ascii=False), encoding="utf-8")
        # Whisper's tokenizer class (what the ASR pipeline decodes with), safe once the special tokens come last.
        tokenizer = WhisperTokenizer.from_pretrained(tmp)
    model = whisper.model
    index = torch.tensor(order, device=model.device)
    with torch.no_grad():
        embedding = model.get_input_embeddings()
        embedding.weight.copy_(embedding.weight[index])  # proj_out is tied to it
    ids = {name: new_id[getattr(model.config, name)]
           for name in ("bos_token_id", "eos_token_id", "pad_token_id", "decoder_start_token_id")}
    for name, value in ids.items():
        setattr(model.config, name, value)
        setattr(model.generation_config, name, value)
    if ctc_head is not None:
        rows = torch.cat([index.cpu(), torch.arange(len(order), ctc_head["weight"].shape[0])])
        ctc_head = {"weight": ctc_head["weight"][rows], "bias": ctc_head["bias"][rows]}
    return LoadedWhisper(model, whisper.feature_extractor, tokenizer), ctc_head


def complete_generation_config(
    whisper: LoadedWhisper, language: str | None, num_beams: int, max_new_tokens: int | str = default("evaluation.max_new_tokens"),
    task: str = "transcribe",
) -> None:
    """Fill the generation config with what transformers' Whisper generation reads (language and task token ids,
    the no-timestamps token, the task, the suppressed tokens) and how the model is evaluated here (`language`; None:
    detected; `num_beams`: the ASR pipeline's own default is 5 beams; the token cap, `token_cap`), so that a plain
    `pipeline("automatic-speech-recognition", model=folder)` transcribes as this project's decoder does, utterance
    for utterance. Built from the tokenizer alone, so a folder written with a wrong config is repaired, and checked
    (`generation_config_problems`) before it is used."""
    tokenizer, config = whisper.tokenizer, whisper.model.generation_config
    vocabulary = tokenizer.get_vocab()
    config.language = None if language is None else language_token(language).strip("<|>")
    config.num_beams = num_beams
    config.lang_to_id = {t: vocabulary[t] for t in language_tokens(tokenizer)}
    config.task_to_id = {name: vocabulary[token] for name, token in (("transcribe", TRANSCRIBE), ("translate", TRANSLATE))
                         if token in vocabulary}
    config.is_multilingual = len(config.lang_to_id) > 1
    config.no_timestamps_token_id = vocabulary[NO_TIMESTAMPS]
    config.task = task
    config.suppress_tokens = suppressed_token_ids(whisper)
    config.max_new_tokens = token_cap(whisper, max_new_tokens)
    config.max_length = None  # max_new_tokens rules; both set makes transformers warn at every call
    problems = generation_config_problems(whisper)
    if problems:
        raise ValueError(f"generation config: {problems[0]}")


def generation_config_problems(whisper: LoadedWhisper) -> list[str]:
    """What in the model's generation config contradicts its tokenizer (empty when nothing): every `lang_to_id`
    entry a language token at its id and every language token there; the no-timestamps and task ids; no timestamp,
    text or end-of-text token suppressed (timestamp seeking and the ASR pipeline would then write nonsense)."""
    tokenizer, config = whisper.tokenizer, whisper.model.generation_config
    vocabulary = tokenizer.get_vocab()
    problems = []
    lang_to_id = dict(getattr(config, "lang_to_id", None) or {})
    languages = {t: vocabulary[t] for t in language_tokens(tokenizer)}
    if lang_to_id != languages:
        wrong = sorted(set(lang_to_id.items()) ^ set(languages.items()))
        problems.append(f"lang_to_id differs from the tokenizer's language tokens at {wrong[0]}")
    if getattr(config, "no_timestamps_token_id", None) != vocabulary.get(NO_TIMESTAMPS):
        problems.append(f"no_timestamps_token_id {getattr(config, 'no_timestamps_token_id', None)} is not "
                        f"{NO_TIMESTAMPS} ({vocabulary.get(NO_TIMESTAMPS)})")
    for task, token in (getattr(config, "task_to_id", None) or {}).items():
        if token != vocabulary.get(f"<|{task}|>"):
            problems.append(f"task_to_id[{task!r}] {token} is not <|{task}|> ({vocabulary.get(f'<|{task}|>')})")
    never_suppressed = {whisper.eot_id, *timestamp_token_ids(tokenizer)}
    wrongly = [token for token in getattr(config, "suppress_tokens", None) or [] if token in never_suppressed]
    if wrongly:
        problems.append(f"suppress_tokens holds {tokenizer.convert_ids_to_tokens(wrongly[0])} ({wrongly[0]})")
    language = getattr(config, "language", None)
    if language is not None and language_token(language) not in lang_to_id:
        problems.append(f"language {language!r} has no token in the tokenizer")
    return problems


def token_cap(whisper: LoadedWhisper, max_new_tokens: int | str = default("evaluation.max_new_tokens")) -> int:
    """The most tokens one hypothesis (one window) may have: `max_new_tokens`, or with "auto" the model's whole
    target space after the prompt (444 for released Whisper's 448 positions, the limit of transformers' ASR
    pipeline), never more than that space. A hypothesis that reaches it is flagged, never passed off as complete."""
    space = whisper.model.config.max_target_positions - PROMPT_LENGTH
    if max_new_tokens == "auto":
        return space
    if not isinstance(max_new_tokens, int) or isinstance(max_new_tokens, bool) or max_new_tokens < 1:
        raise ValueError(f"max_new_tokens must be a positive integer or 'auto', not {max_new_tokens!r}")
    if max_new_tokens > space:
        raise ValueError(f"max_new_tokens {max_new_tokens} exceeds the model's target space: "
                         f"{whisper.model.config.max_target_positions} positions minus the {PROMPT_LENGTH}-token prompt")
    return max_new_tokens


def feature_extractor_for(num_mel_bins: int, audio_seconds: int, sample_rate: int = 16000) -> WhisperFeatureExtractor:
    """Whisper's log-mel front end for a window of `audio_seconds` (30 s for released Whisper checkpoints)."""
    return WhisperFeatureExtractor(feature_size=num_mel_bins, sampling_rate=sample_rate, chunk_length=audio_seconds)


@dataclass
class LoadedWhisper:
    """A model with its front end and tokenizer: everything decoding and training need."""

    model: WhisperForConditionalGeneration
    feature_extractor: WhisperFeatureExtractor
    tokenizer: PreTrainedTokenizerFast

    def prompt_ids(self, language: str) -> list[int]:
        """`<|startoftranscript|><|lang|><|transcribe|><|notimestamps|>`, Whisper's transcription prompt."""
        tokens = [START_OF_TRANSCRIPT, language_token(language), TRANSCRIBE, NO_TIMESTAMPS]
        ids = self.tokenizer.convert_tokens_to_ids(tokens)
        unknown = [tok for tok, i in zip(tokens, ids) if i is None or i == self.tokenizer.unk_token_id and tok != END_OF_TEXT]
        if unknown:
            raise ValueError(f"the model's tokenizer has no token {unknown[0]} (language {language!r} unsupported)")
        return ids

    @property
    def eot_id(self) -> int:
        return self.tokenizer.convert_tokens_to_ids(END_OF_TEXT)

    def save(self, out_dir: str | Path, extra_files: Mapping[str, str | bytes] | None = None, replace: bool = False) -> None:
        """Write the model folder atomically (asrmerge.atomic.staged_folder), with `extra_files` (name -> text or
        bytes) beside the model files; an existing non-empty folder is replaced only with `replace`. A Whisper
        generation config (one with `lang_to_id`) that contradicts the tokenizer is refused (`generation_config_problems`)."""
        if getattr(self.model.generation_config, "lang_to_id", None):
            problems = generation_config_problems(self)
            if problems:
                raise ValueError(f"{out_dir}: generation config contradicts the tokenizer: {problems[0]}")
        with staged_folder(out_dir, replace=replace) as staging:
            self.model.save_pretrained(staging, safe_serialization=True)
            self.feature_extractor.save_pretrained(staging)
            self.tokenizer.save_pretrained(staging)
            for name, content in (extra_files or {}).items():
                if isinstance(content, bytes):
                    (staging / name).write_bytes(content)
                else:
                    (staging / name).write_text(content, encoding="utf-8")


def resolve_device(device: str) -> torch.device:
    """`auto` takes the GPU a scheduler gave this job when there is one, else the CPU."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def load_whisper(source: str | Path, device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32) -> LoadedWhisper:
    """Load a Whisper folder or hub id (the hub is only reached when `source` is not a local folder)."""
    source = str(source)
    local = Path(source).is_dir()
    if not local and not is_hub_id(source):
        raise FileNotFoundError(f"model folder {source} does not exist or is not a folder (a hub id has the form "
                                "owner/name, e.g. openai/whisper-base)")
    config_path = Path(source) / layout.MODEL_CONFIG
    if local and not config_path.is_file():
        raise FileNotFoundError(f"{source} is not a transformers model folder (no {layout.MODEL_CONFIG})")
    if local and json.loads(config_path.read_text()).get("model_type") != "whisper":
        raise ValueError(f"{source} is not a Whisper model (config.json model_type is not 'whisper')")
    model, loading = WhisperForConditionalGeneration.from_pretrained(source, dtype=dtype, output_loading_info=True)
    # transformers fills a missing or mis-shaped tensor with random values and carries on: that model is not the
    # checkpoint, and its task vector would be noise there.
    for problem in ("missing_keys", "mismatched_keys", "unexpected_keys"):
        if loading.get(problem):
            raise ValueError(f"model folder {source}: {problem.replace('_', ' ')} in its weights, e.g. "
                             f"{sorted(loading[problem])[0]} (a Whisper of another size, or an incomplete file)")
    model.to(torch.device(device)).eval()
    return LoadedWhisper(
        model=model,
        feature_extractor=AutoFeatureExtractor.from_pretrained(source),
        tokenizer=AutoTokenizer.from_pretrained(source),
    )


def log_mel(whisper: LoadedWhisper, audios: Sequence[np.ndarray], device: torch.device) -> torch.Tensor:
    """Whisper log-mel features, each clip padded to the model's input window (a longer clip is an error: long
    recordings are split by asrmerge.evaluation.longform before they get here)."""
    fe = whisper.feature_extractor
    longest = max((len(a) for a in audios), default=0)
    if longest > fe.n_samples:
        raise ValueError(f"a clip of {longest / fe.sampling_rate:.2f} s is longer than the model's "
                         f"{fe.n_samples / fe.sampling_rate:g} s window")
    features = fe(list(audios), sampling_rate=fe.sampling_rate, return_tensors="pt").input_features
    return features.to(device=device, dtype=whisper.model.dtype)


def suppressed_token_ids(whisper: LoadedWhisper) -> list[int]:
    """Tokens a transcript never contains, as Whisper's decoder and transformers' generation suppress them: the
    special tokens (prompt, task, language, no-speech tokens) and the model's own `suppress_tokens` (Whisper's
    non-speech symbols), but end-of-text and the timestamps (which timestamp seeking predicts)."""
    allowed = {whisper.eot_id, *timestamp_token_ids(whisper.tokenizer)}
    suppressed = set(whisper.tokenizer.all_special_ids) | set(whisper.tokenizer.added_tokens_decoder)
    suppressed |= set(getattr(whisper.model.generation_config, "suppress_tokens", None) or [])
    return sorted(i for i in suppressed - allowed if i < whisper.model.config.vocab_size)


def predicts_timestamps(whisper: LoadedWhisper) -> bool:
    """Whether the checkpoint has Whisper's timestamp tokens (`<|0.00|>` right after `<|notimestamps|>`, where
    transformers' generation looks for them), as released Whisper checkpoints do; the demo's foundation has none."""
    first, no_timestamps = whisper.tokenizer.convert_tokens_to_ids([FIRST_TIMESTAMP, NO_TIMESTAMPS])
    return first not in (None, whisper.tokenizer.unk_token_id) and first == no_timestamps + 1


def first_step_suppressed_ids(whisper: LoadedWhisper) -> list[int]:
    """Tokens that may not open a transcript (Whisper's `begin_suppress_tokens`: a blank, end-of-text)."""
    return list(getattr(whisper.model.generation_config, "begin_suppress_tokens", None) or [])
