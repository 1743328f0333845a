"""Channel effects in numpy/scipy: additive noise, telephone band and codec, reverberation, gain.

Every effect has the signature ``effect(audio, sample_rate, rng, **params) -> audio`` (float32 mono in, float32
mono out, same length) and takes all its randomness from the explicit ``rng``. Effects are registered by name in
EFFECTS; a *chain* is a list of dicts ``{"type": name, **params}`` applied in order by `apply_chain`.

In a chain, a parameter given as a two-number list ``[low, high]`` is drawn uniformly per call, a list of
strings is a uniform choice, and anything else is used as is. The optional key ``p`` (0..1) applies the step
with that probability.
"""

from __future__ import annotations

import functools
import inspect
import logging
from collections.abc import Callable, Mapping, Sequence
from math import gcd
from typing import Any

import numpy as np

from asrmerge.lazy_import import lazy_import

scipy_fft = lazy_import("scipy.fft")  # executed on first use: config validation imports this module, jobs run it
scipy_signal = lazy_import("scipy.signal")

logger = logging.getLogger(__name__)

Effect = Callable[..., np.ndarray]


def _as_audio(audio: np.ndarray) -> np.ndarray:
    array = np.asarray(audio, dtype=np.float32)
    if array.ndim != 1:
        raise ValueError(f"effects take mono audio (1-D), got shape {array.shape}")
    return array


def _power(x: np.ndarray) -> float:
    return float(np.mean(np.square(x, dtype=np.float64))) if x.size else 0.0


def _shaped_noise(length: int, color: str, rng: np.random.Generator, audio: np.ndarray) -> np.ndarray:
    """Unit-free noise of ``length`` samples with the spectral shape named by ``color``."""
    if color == "babble":
        # Speech-shaped noise: a sum of time-reversed, circularly shifted copies of the utterance itself.
        reversed_audio = audio[::-1].astype(np.float64)
        shifts = rng.integers(0, max(length, 1), size=6)
        return np.sum([np.roll(reversed_audio, int(shift)) for shift in shifts], axis=0)
    if color == "white":
        return rng.standard_normal(length)
    exponent = {"pink": 0.5, "brown": 1.0}[color]
    # Shape white noise in the frequency domain, on an FFT-friendly length, then cut to size.
    size = scipy_fft.next_fast_len(length, real=True)
    spectrum = scipy_fft.rfft(rng.standard_normal(size))
    frequencies = np.arange(spectrum.size, dtype=np.float64)
    frequencies[0] = 1.0
    return scipy_fft.irfft(spectrum / frequencies**exponent, n=size)[:length]


NOISE_COLORS = ("white", "pink", "brown", "babble")


def noise(audio: np.ndarray, sample_rate: int, rng: np.random.Generator, snr_db: float, color: str = "white") -> np.ndarray:
    """Add noise at a signal-to-noise ratio of ``snr_db`` dB (powers measured over the whole clip).

    ``color``: ``white``, ``pink`` (1/f), ``brown`` (1/f²) or ``babble`` (speech-shaped, made from the
    utterance itself reversed and shifted). Silent input is returned unchanged.
    """
    audio = _as_audio(audio)
    if color not in NOISE_COLORS:
        raise ValueError(f"noise color must be one of {', '.join(NOISE_COLORS)}, got {color!r}")
    signal_power = _power(audio)
    if signal_power == 0.0 or audio.size < 2:
        return audio.copy()
    shaped = _shaped_noise(audio.size, color, rng, audio)
    noise_power = _power(shaped)
    if noise_power == 0.0:
        return audio.copy()
    scale = np.sqrt(signal_power / (noise_power * 10.0 ** (float(snr_db) / 10.0)))
    return (audio.astype(np.float64) + scale * shaped).astype(np.float32)


@functools.lru_cache(maxsize=32)
def _resampling_filter(up: int, down: int) -> np.ndarray:
    """The low-pass FIR that resample_poly designs by default (Kaiser window, beta 5), designed once."""
    max_rate = max(up, down)
    filter_taps = scipy_signal.firwin(2 * 10 * max_rate + 1, 1.0 / max_rate, window=("kaiser", 5.0))
    filter_taps.flags.writeable = False
    return filter_taps


def resample(audio: np.ndarray, source_rate: int, target_rate: int) -> np.ndarray:
    """Polyphase resampling (scipy.signal.resample_poly with its default filter, cached per rate pair)."""
    if int(source_rate) == int(target_rate):
        return audio
    factor = gcd(int(source_rate), int(target_rate))
    up, down = int(target_rate) // factor, int(source_rate) // factor
    return scipy_signal.resample_poly(audio, up, down, window=_resampling_filter(up, down).copy())


def mu_law_round_trip(audio: np.ndarray, mu: int = 255) -> np.ndarray:
    """Encode to 8-bit µ-law and decode again (G.711-style companding and quantisation)."""
    clipped = np.clip(audio, -1.0, 1.0)
    companded = np.sign(clipped) * np.log1p(mu * np.abs(clipped)) / np.log1p(mu)
    codes = np.round((companded + 1.0) / 2.0 * mu)
    decoded = codes / mu * 2.0 - 1.0
    return np.sign(decoded) * np.expm1(np.abs(decoded) * np.log1p(mu)) / mu


def telephone(
    audio: np.ndarray,
    sample_rate: int,
    rng: np.random.Generator,
    low_hz: float = 300.0,
    high_hz: float = 3400.0,
    codec_rate: int = 8000,
    mu: int = 255,
) -> np.ndarray:
    """Narrow-band telephone channel: band-pass ``low_hz``..``high_hz``, resample to ``codec_rate``,
    8-bit µ-law round trip, and back to ``sample_rate``. Deterministic (``rng`` unused)."""
    audio = _as_audio(audio)
    if not 0 < low_hz < high_hz < codec_rate / 2:
        raise ValueError(f"telephone band {low_hz}..{high_hz} Hz must lie inside 0..{codec_rate / 2} Hz")
    if audio.size == 0:
        return audio.copy()
    sos = scipy_signal.butter(4, [low_hz, high_hz], btype="bandpass", fs=sample_rate, output="sos")
    band = scipy_signal.sosfilt(sos, audio.astype(np.float64))
    narrow = resample(band, sample_rate, codec_rate)
    coded = mu_law_round_trip(narrow, int(mu))
    wide = resample(coded, codec_rate, sample_rate)
    out = np.zeros(audio.size, dtype=np.float64)
    out[: min(audio.size, wide.size)] = wide[: audio.size]
    return out.astype(np.float32)


def reverb(
    audio: np.ndarray, sample_rate: int, rng: np.random.Generator, rt60: float, drr_db: float = 0.0
) -> np.ndarray:
    """Room reverberation: convolve with a direct path plus an exponentially decaying noise tail.

    ``rt60``: seconds for the tail to decay by 60 dB; ``drr_db``: direct-to-reverberant energy ratio.
    The output keeps the input's length and RMS level.
    """
    audio = _as_audio(audio)
    if rt60 <= 0:
        raise ValueError(f"reverb rt60 must be positive, got {rt60}")
    if audio.size == 0:
        return audio.copy()
    length = max(int(rt60 * sample_rate), 2)
    time = np.arange(length) / sample_rate
    tail = rng.standard_normal(length) * np.exp(-3.0 * np.log(10.0) * time / rt60)
    tail[0] = 0.0
    tail *= np.sqrt(10.0 ** (-float(drr_db) / 10.0) / max(_power(tail) * length, 1e-12))
    impulse = tail
    impulse[0] = 1.0
    wet = scipy_signal.fftconvolve(audio.astype(np.float64), impulse)[: audio.size]
    wet_power = _power(wet)
    if wet_power > 0:
        wet *= np.sqrt(_power(audio) / wet_power)
    return wet.astype(np.float32)


def gain(audio: np.ndarray, sample_rate: int, rng: np.random.Generator, gain_db: float) -> np.ndarray:
    """Scale by ``gain_db`` decibels. Deterministic (``rng`` unused)."""
    audio = _as_audio(audio)
    return (audio * np.float32(10.0 ** (float(gain_db) / 20.0))).astype(np.float32)


# name -> effect(audio, sample_rate, rng, **params)
EFFECTS: dict[str, Effect] = {
    "noise": noise,
    "telephone": telephone,
    "reverb": reverb,
    "gain": gain,
}

_RESERVED_KEYS = ("type", "p")


def _effect_parameters(name: str) -> tuple[set[str], set[str]]:
    """(all parameter names, required parameter names) of effect ``name``."""
    parameters = list(inspect.signature(EFFECTS[name]).parameters.values())[3:]
    names = {p.name for p in parameters}
    required = {p.name for p in parameters if p.default is inspect.Parameter.empty}
    return names, required


def _check_value(value: Any, where: str) -> None:
    if isinstance(value, (list, tuple)):
        if all(isinstance(v, str) for v in value) and value:
            return
        if len(value) == 2 and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in value):
            if value[0] > value[1]:
                raise ValueError(f"{where}: range {list(value)} has low > high")
            return
        raise ValueError(f"{where}: a list must be [low, high] numbers or a list of strings, got {value!r}")
    if not isinstance(value, (int, float, str)) or isinstance(value, bool):
        raise ValueError(f"{where}: expected a number, a string, [low, high] or a list of strings, got {value!r}")


def validate_chain(chain: Sequence[Mapping[str, Any]], where: str = "channel") -> None:
    """Check a chain's structure: known effect types, known and complete parameters, well-formed values.

    ValueError names ``where``, the step index and the offending key.
    """
    if not isinstance(chain, (list, tuple)):
        raise ValueError(f"{where}: must be a list of effects, got {type(chain).__name__}")
    for index, step in enumerate(chain):
        at = f"{where}[{index}]"
        if not isinstance(step, Mapping):
            raise ValueError(f"{at}: each effect must be a mapping with a 'type', got {step!r}")
        name = step.get("type")
        if name not in EFFECTS:
            raise ValueError(f"{at}.type: unknown effect {name!r} (known: {', '.join(sorted(EFFECTS))})")
        names, required = _effect_parameters(name)
        for key, value in step.items():
            if key == "type":
                continue
            if key == "p":
                if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value <= 1:
                    raise ValueError(f"{at}.p: probability must be a number in 0..1, got {value!r}")
                continue
            if key not in names:
                raise ValueError(f"{at}.{key}: effect {name!r} has no parameter {key!r} (has: {', '.join(sorted(names))})")
            _check_value(value, f"{at}.{key}")
        missing = required - set(step)
        if missing:
            raise ValueError(f"{at}: effect {name!r} needs {', '.join(sorted(missing))}")


def sample_value(value: Any, rng: np.random.Generator) -> Any:
    """Draw one value from a chain parameter: [low, high] -> uniform float, [str, ...] -> choice, else as is."""
    if isinstance(value, (list, tuple)):
        if value and all(isinstance(v, str) for v in value):
            return value[int(rng.integers(len(value)))]
        low, high = value
        return float(rng.uniform(float(low), float(high)))
    return value


def resolve_chain(chain: Sequence[Mapping[str, Any]], rng: np.random.Generator) -> list[dict[str, Any]]:
    """Draw the per-utterance values of a chain: the steps that apply, each with concrete parameters."""
    resolved: list[dict[str, Any]] = []
    for step in chain:
        if "p" in step and rng.random() >= float(step["p"]):
            continue
        concrete: dict[str, Any] = {"type": step["type"]}
        for key, value in step.items():
            if key not in _RESERVED_KEYS:
                concrete[key] = sample_value(value, rng)
        resolved.append(concrete)
    return resolved


def run_chain(
    audio: np.ndarray, sample_rate: int, resolved: Sequence[Mapping[str, Any]], rng: np.random.Generator
) -> np.ndarray:
    """Apply an already resolved chain (see `resolve_chain`)."""
    out = _as_audio(audio)
    for step in resolved:
        params = {key: value for key, value in step.items() if key != "type"}
        out = EFFECTS[step["type"]](out, sample_rate, rng, **params)
    return out


def apply_chain(
    audio: np.ndarray, sample_rate: int, chain: Sequence[Mapping[str, Any]], rng: np.random.Generator
) -> np.ndarray:
    """Apply ``chain`` (a list of ``{"type": name, **params}``) to ``audio`` in order; [] leaves it unchanged."""
    validate_chain(chain)
    return run_chain(audio, sample_rate, resolve_chain(chain, rng), rng)
