"""Batched decoding of Whisper models: greedy and beam search with a key/value cache, transcripts per utterance.

Utterances are sorted by duration so a batch holds similar lengths; the encoder runs once per batch and the decoder
extends all hypotheses one token per step, reusing cached self- and cross-attention keys.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from tqdm import tqdm
from transformers.cache_utils import DynamicCache, EncoderDecoderCache

from asrmerge.data.manifest import Utterance, load_audio
from asrmerge.defaults import default
from asrmerge.evaluation.hypotheses import hypothesis_flags
from asrmerge.evaluation.longform import Piece, check_lengths, vad_pieces, window_pieces
from asrmerge.models.whisper import (
    LoadedWhisper, first_step_suppressed_ids, language_token, log_mel, predicts_timestamps, suppressed_token_ids,
    token_cap,
)

log = logging.getLogger(__name__)


#: How a recording longer than the window becomes decoder inputs, per long-form mode (`reject` never gets here).
LONG_FORM_PIECES = {
    "vad": vad_pieces,
    "sequential": lambda index, audio, window: window_pieces(index, len(audio), window),
}


@dataclass(frozen=True)
class DecodingOptions:
    batch_size: int = default("evaluation.batch_size")
    # the most tokens of one hypothesis: asrmerge.models.whisper.token_cap
    max_new_tokens: int | str = default("evaluation.max_new_tokens")
    num_beams: int = default("evaluation.num_beams")
    # recordings longer than the window: asrmerge.evaluation.longform.LONG_FORM_MODES
    long_form: str = default("evaluation.long_form")


def _suppress(logits: torch.Tensor, always: torch.Tensor, at_start: torch.Tensor, step: int) -> torch.Tensor:
    logits[:, always] = -torch.inf
    if step == 0:
        logits[:, at_start] = -torch.inf
    return logits


@torch.inference_mode()
def greedy_decode(whisper: LoadedWhisper, features: torch.Tensor, prompt: Sequence[int], max_new_tokens: int) -> list[list[int]]:
    """Greedy search for a batch of log-mel features sharing one prompt; returns token ids without prompt or EOT.

    The prompt goes through transformers' decoder (its causal mask over several positions), which fills the key/value
    caches; every later token goes through `_decoder_step`. A row leaves the batch at its end-of-text, so the
    remaining steps compute only the unfinished transcripts.
    """
    model = whisper.model
    decoder = model.model.decoder
    batch, device, eot = features.shape[0], features.device, whisper.eot_id
    tokens: list[list[int]] = [[] for _ in range(batch)]
    limit = min(max_new_tokens, model.config.max_target_positions - len(prompt))
    if limit <= 0:
        return tokens
    encoder_states = model.model.encoder(features).last_hidden_state
    suppress = torch.tensor(suppressed_token_ids(whisper), device=device, dtype=torch.long)
    suppress_first = torch.tensor(first_step_suppressed_ids(whisper), device=device, dtype=torch.long)
    cache = EncoderDecoderCache(DynamicCache(), DynamicCache())
    hidden = decoder(input_ids=torch.tensor([list(prompt)] * batch, device=device), encoder_hidden_states=encoder_states,
                     cache=cache, use_cache=True).last_hidden_state[:, -1]
    self_keys = [(layer.keys, layer.values) for layer in cache.self_attention_cache.layers]
    cross_keys = [(layer.keys, layer.values) for layer in cache.cross_attention_cache.layers]
    rows = list(range(batch))  # the utterance of each row still in the batch
    live = torch.ones(batch, dtype=torch.bool, device=device)
    for step in range(limit):
        next_token = _suppress(model.proj_out(hidden).float(), suppress, suppress_first, step).argmax(dim=-1)
        live &= next_token != eot
        for row, token, going in zip(rows, next_token.tolist(), live.tolist()):
            if going:
                tokens[row].append(token)
        if step + 1 == limit or not bool(live.any()):
            break
        # Rows are independent, so a finished row can leave the batch; it leaves once a quarter of the batch is
        # finished, as copying the cached keys costs about a step.
        if int((~live).sum()) * 4 >= len(rows):
            keep = live.nonzero().squeeze(1)
            rows, live, next_token = [rows[i] for i in keep.tolist()], live[keep], next_token[keep]
            self_keys = [(keys[keep], values[keep]) for keys, values in self_keys]
            cross_keys = [(keys[keep], values[keep]) for keys, values in cross_keys]
        hidden = _decoder_step(decoder, next_token, len(prompt) + step, self_keys, cross_keys)
    return tokens


def _split_heads(states: torch.Tensor, attention: torch.nn.Module) -> torch.Tensor:
    """(batch, positions, width) -> (batch, heads, positions, head width), contiguous, as transformers' Whisper does."""
    return states.view(states.shape[0], -1, attention.num_heads, attention.head_dim).transpose(1, 2).contiguous()


def _attend(attention: torch.nn.Module, hidden: torch.Tensor, keys: torch.Tensor, values: torch.Tensor) -> torch.Tensor:
    """One new position of a WhisperAttention on given keys and values: the operations of transformers' SDPA path
    (query scaled before the product, SDPA with scale 1 and no mask, which a single query needs), in its order."""
    query = _split_heads(attention.q_proj(hidden) * attention.scaling, attention)
    output = torch.nn.functional.scaled_dot_product_attention(query, keys, values, dropout_p=0.0, scale=1.0)
    return attention.out_proj(output.transpose(1, 2).contiguous().reshape(hidden.shape[0], 1, -1).contiguous())


def _decoder_step(
    decoder: torch.nn.Module, token: torch.Tensor, position: int, self_keys: list[tuple[torch.Tensor, torch.Tensor]],
    cross_keys: Sequence[tuple[torch.Tensor, torch.Tensor]],
) -> torch.Tensor:
    """The decoder's last hidden state for one more token per row (`token`: (batch,)), extending `self_keys` in place:
    the operations of transformers' WhisperDecoder with a cache, in its order (so the same numbers), without its
    per-call machinery (output capture, mask building, cache objects), which costs more than a small model's
    arithmetic."""
    hidden = decoder.embed_tokens(token[:, None]) + decoder.embed_positions.weight[position]
    for index, (layer, cross) in enumerate(zip(decoder.layers, cross_keys)):
        attention, (keys, values) = layer.self_attn, self_keys[index]
        normed = layer.self_attn_layer_norm(hidden)
        keys = torch.cat([keys, _split_heads(attention.k_proj(normed), attention)], dim=-2)
        values = torch.cat([values, _split_heads(attention.v_proj(normed), attention)], dim=-2)
        self_keys[index] = (keys, values)
        hidden = hidden + _attend(attention, normed, keys, values)
        hidden = hidden + _attend(layer.encoder_attn, layer.encoder_attn_layer_norm(hidden), *cross)
        hidden = hidden + layer.fc2(layer.activation_fn(layer.fc1(layer.final_layer_norm(hidden))))
    return decoder.layer_norm(hidden)[:, -1]


@torch.inference_mode()
def beam_decode(
    whisper: LoadedWhisper, features: torch.Tensor, prompt: Sequence[int], max_new_tokens: int, num_beams: int,
    length_penalty: float = 1.0,
) -> list[list[int]]:
    """Beam search (the paper decodes with 5 beams): the best finished hypothesis by log-probability / length^penalty.

    Follows transformers' beam search (2K candidates per step, only the top K may finish, its default stopping
    heuristic), so transcripts match `generate(num_beams=K)`. The beams of one utterance share its encoder states,
    so only the self-attention keys are reordered. The prompt goes through transformers' decoder, every later token
    through `_decoder_step`, as in `greedy_decode`.
    """
    model = whisper.model
    batch, device, eot = features.shape[0], features.device, whisper.eot_id
    encoder_states = model.model.encoder(features).last_hidden_state
    decoder = model.model.decoder
    cache = EncoderDecoderCache(DynamicCache(), DynamicCache())
    suppress = torch.tensor(suppressed_token_ids(whisper), device=device, dtype=torch.long)
    suppress_first = torch.tensor(first_step_suppressed_ids(whisper), device=device, dtype=torch.long)
    limit = min(max_new_tokens, model.config.max_target_positions - len(prompt))
    # Only the first beam of each utterance is live at the start, so the first step does not pick K copies.
    scores = torch.full((batch, num_beams), -torch.inf, device=device)
    scores[:, 0] = 0.0
    sequences = torch.empty((batch * num_beams, 0), dtype=torch.long, device=device)
    # The first step runs once per utterance (only its first beam is live); its cross-attention keys and values,
    # the costliest part of a beam's first step, are then copied to the K beams instead of recomputed K times.
    hidden = decoder(input_ids=torch.tensor([list(prompt)] * batch, device=device), encoder_hidden_states=encoder_states,
                     cache=cache, use_cache=True).last_hidden_state[:, -1]
    self_keys = [(layer.keys, layer.values) for layer in cache.self_attention_cache.layers]
    cross_keys = [(layer.keys, layer.values) for layer in cache.cross_attention_cache.layers]
    finished: list[list[tuple[float, list[int]]]] = [[] for _ in range(batch)]
    closed = [False] * batch
    for step in range(limit):
        # Normalise before suppressing, as transformers' beam search does, so scores match its ranking.
        log_probs = _suppress(model.proj_out(hidden).float().log_softmax(dim=-1), suppress, suppress_first, step)
        if step == 0:
            log_probs = log_probs.repeat_interleave(num_beams, dim=0)
            self_keys = [(keys.repeat_interleave(num_beams, dim=0), values.repeat_interleave(num_beams, dim=0))
                         for keys, values in self_keys]
            cross_keys = [(keys.repeat_interleave(num_beams, dim=0), values.repeat_interleave(num_beams, dim=0))
                          for keys, values in cross_keys]
        vocab = log_probs.shape[-1]
        candidates = (scores.view(-1, 1) + log_probs).view(batch, num_beams * vocab)
        # 2K candidates per utterance: enough live ones remain after the finished ones are set aside.
        top_scores, top_index = candidates.topk(2 * num_beams, dim=-1)
        beam_of, token_of = top_index // vocab, top_index % vocab
        new_scores = torch.full((batch, num_beams), -torch.inf, device=device)
        new_beam = torch.zeros((batch, num_beams), dtype=torch.long, device=device)
        new_token = torch.full((batch, num_beams), eot, dtype=torch.long, device=device)
        for item in range(batch):
            kept = 0
            for rank, (score, beam, token) in enumerate(
                zip(top_scores[item].tolist(), beam_of[item].tolist(), token_of[item].tolist())
            ):
                if score == -torch.inf or kept == num_beams:
                    break
                if token == eot:
                    # Only the K best candidates may end a hypothesis; an item that cannot improve takes no more.
                    if rank < num_beams and not closed[item]:
                        tokens = sequences[item * num_beams + beam].tolist()
                        finished[item].append((score / (step + 1) ** length_penalty, tokens))
                        finished[item] = sorted(finished[item], key=lambda pair: -pair[0])[:num_beams]
                    continue
                new_scores[item, kept], new_beam[item, kept], new_token[item, kept] = score, beam, token
                kept += 1
            # transformers' default stopping heuristic: the best live beam, normalised at its current length,
            # can no longer beat the worst of K finished hypotheses.
            if len(finished[item]) == num_beams:
                best_live = float(new_scores[item, 0]) / (step + 1) ** length_penalty
                closed[item] = closed[item] or best_live <= finished[item][-1][0]
        if all(closed):
            break
        origin = (torch.arange(batch, device=device)[:, None] * num_beams + new_beam).view(-1)
        self_keys = [(keys.index_select(0, origin), values.index_select(0, origin)) for keys, values in self_keys]
        sequences = torch.cat([sequences[origin], new_token.view(-1, 1)], dim=1)
        scores = new_scores
        if step + 1 < limit:
            hidden = _decoder_step(decoder, new_token.view(-1), len(prompt) + step, self_keys, cross_keys)
    results = []
    for item in range(batch):
        if not finished[item]:  # no beam ended within the limit: take the best live one
            best = int(scores[item].argmax())
            finished[item].append((float(scores[item, best]), sequences[item * num_beams + best].tolist()))
        results.append(max(finished[item], key=lambda pair: pair[0])[1])
    return results


def search(whisper: LoadedWhisper, features: torch.Tensor, prompt: Sequence[int], options: DecodingOptions) -> list[list[int]]:
    """Greedy search for one beam, beam search otherwise; a hypothesis of `token_cap` tokens never ended."""
    cap = token_cap(whisper, options.max_new_tokens)
    if options.num_beams == 1:
        return greedy_decode(whisper, features, prompt, cap)
    return beam_decode(whisper, features, prompt, cap, options.num_beams)


@torch.inference_mode()
def timestamp_sequential_decode(
    whisper: LoadedWhisper, audios: Sequence[np.ndarray], language: str, options: DecodingOptions, device: torch.device,
) -> list[tuple[str, bool]]:
    """Whisper's sequential long-form algorithm with timestamp-based seeking, as transformers' `generate` runs it on
    inputs longer than the window (batched): each window is decoded with timestamps, the next window starts at the end
    of the last complete segment (after the window when its last segment is complete), the text keeps no timestamps.
    Greedy or beam search as configured; no temperature fallback and no conditioning on the previous window's text
    (neither does any other mode here). For checkpoints with timestamp tokens (`predicts_timestamps`).
    Returns each recording's text and whether a window's decoding reached the token cap before end-of-text."""
    fe = whisper.feature_extractor
    inputs = fe(list(audios), sampling_rate=fe.sampling_rate, return_tensors="pt", truncation=False, padding="longest",
                return_attention_mask=True)
    cap = token_cap(whisper, options.max_new_tokens)
    generated = whisper.model.generate(
        inputs.input_features.to(device=device, dtype=whisper.model.dtype),
        attention_mask=inputs.attention_mask.to(device), language=language_token(language), task="transcribe",
        return_timestamps=True, condition_on_prev_tokens=False, num_beams=options.num_beams,
        max_new_tokens=cap, return_segments=True,
    )
    texts = [whisper.tokenizer.decode(row, skip_special_tokens=True).strip() for row in generated["sequences"]]
    return [(text, any(_window_reached_cap(segment["result"], whisper.eot_id, cap) for segment in segments))
            for text, segments in zip(texts, generated["segments"])]


def _window_reached_cap(window_output: torch.Tensor | dict, eot: int, cap: int) -> bool:
    """Whether one window's generation (a segment's `result` in transformers' long-form output) ran to the cap: no
    end-of-text among its tokens and at least `cap` of them."""
    tokens = window_output["sequences"] if isinstance(window_output, dict) else window_output
    tokens = tokens.reshape(-1)
    return bool((tokens != eot).all()) and tokens.numel() >= cap


def transcribe(
    whisper: LoadedWhisper, utterances: Sequence[Utterance], options: DecodingOptions, device: torch.device,
    progress: bool = True,
) -> list[dict]:
    """Decode utterances (any order, any languages) into rows {id, language, reference, hypothesis, flags}, in input
    order (flags: asrmerge.evaluation.hypotheses.FLAGS, why a hypothesis is not a complete transcript).

    Recordings longer than the model's window follow `options.long_form` (asrmerge.evaluation.longform): refused before any
    decoding, or decoded in voice-activity chunks, in consecutive windows or, on checkpoints with timestamp tokens,
    window after window by timestamp-based seeking (the long recordings of the call are then held in memory).
    """
    sr, window = whisper.feature_extractor.sampling_rate, whisper.feature_extractor.n_samples
    check_lengths(utterances, window / sr, options.long_form)
    long_audio = {i: load_audio(u.audio, sr) for i, u in enumerate(utterances) if u.duration > window / sr}
    seeking = options.long_form == "sequential" and predicts_timestamps(whisper)
    split_long = LONG_FORM_PIECES.get(options.long_form)
    pieces = [piece for i in range(len(utterances)) if not (seeking and i in long_audio) for piece in
              (split_long(i, long_audio[i], window) if i in long_audio else [Piece(i)])]

    def audio(piece: Piece) -> np.ndarray:
        if piece.end is None:
            return load_audio(utterances[piece.index].audio, sr)
        return long_audio[piece.index][piece.start : piece.end]

    def seconds(piece: Piece) -> float:
        return utterances[piece.index].duration if piece.end is None else (piece.end - piece.start) / sr

    order = sorted(range(len(pieces)), key=lambda p: (utterances[pieces[p].index].language, -seconds(pieces[p]),
                                                      utterances[pieces[p].index].id, pieces[p].start))
    texts: dict[int, str] = {}
    capped: dict[int, bool] = {}
    cap = token_cap(whisper, options.max_new_tokens)
    batches = [order[i : i + options.batch_size] for i in range(0, len(order), options.batch_size)]
    for batch in tqdm(batches, desc="decode", unit="batch", disable=not progress, mininterval=5):
        for language, members in _by_language(utterances, [pieces[p].index for p in batch], batch).items():
            features = log_mel(whisper, [audio(pieces[p]) for p in members], device)
            token_ids = search(whisper, features, whisper.prompt_ids(language), options)
            for p, ids in zip(members, token_ids):
                texts[p] = whisper.tokenizer.decode(ids, skip_special_tokens=True).strip()
                capped[p] = len(ids) >= cap
    hypotheses: dict[int, list[str]] = {i: [] for i in range(len(utterances))}
    reached_cap = dict.fromkeys(range(len(utterances)), False)
    for p, piece in enumerate(pieces):  # pieces of a recording are in time order
        hypotheses[piece.index].append(texts[p])
        reached_cap[piece.index] |= capped[p]
    if seeking:  # long recordings decoded whole, window after window, by timestamp-based seeking
        recordings = sorted(long_audio, key=lambda i: (utterances[i].language, -utterances[i].duration, utterances[i].id))
        for start in range(0, len(recordings), options.batch_size):
            batch = recordings[start : start + options.batch_size]
            for language, members in _by_language(utterances, batch, batch).items():
                decoded = timestamp_sequential_decode(whisper, [long_audio[i] for i in members], language, options, device)
                for i, (text, window_capped) in zip(members, decoded):
                    hypotheses[i].append(text)
                    reached_cap[i] |= window_capped
    rows = []
    for i, u in enumerate(utterances):
        text = " ".join(part for part in hypotheses[i] if part)
        rows.append({"id": u.id, "language": u.language, "reference": u.text, "hypothesis": text,
                     "flags": hypothesis_flags(text, reached_cap[i])})
    return rows


def _by_language(utterances: Sequence[Utterance], recordings: Sequence[int], members: Sequence[int]) -> dict[str, list[int]]:
    """`members` grouped by the language of their recording (`recordings[k]` is member k's utterance index)."""
    groups: dict[str, list[int]] = {}
    for index, member in zip(recordings, members):
        groups.setdefault(utterances[index].language, []).append(member)
    return groups
