"""Channel effects: SNR accuracy, telephone band, reverberation, chains."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.signal import welch

from asrmerge.data.channel import (
    EFFECTS,
    apply_chain,
    gain,
    mu_law_round_trip,
    noise,
    resolve_chain,
    reverb,
    telephone,
    validate_chain,
)

SR = 16000


def _test_signal(seconds: float = 1.5, seed: int = 0) -> np.ndarray:
    """A speech-like test signal: harmonics with a slow envelope, plus broadband content up to 8 kHz."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * SR)) / SR
    voiced = sum(np.sin(2 * np.pi * 140 * k * t) / k for k in range(1, 40))
    envelope = 0.5 * (1 + np.sin(2 * np.pi * 3 * t))
    return (0.1 * envelope * voiced + 0.02 * rng.standard_normal(t.size)).astype(np.float32)


@pytest.mark.parametrize("color", ["white", "pink", "brown", "babble"])
@pytest.mark.parametrize("snr_db", [0.0, 10.0, 25.0])
def test_noise_hits_the_requested_snr(color: str, snr_db: float) -> None:
    clean = _test_signal()
    noisy = noise(clean, SR, np.random.default_rng(1), snr_db=snr_db, color=color)
    added = noisy.astype(np.float64) - clean
    measured = 10 * np.log10(np.mean(clean.astype(np.float64) ** 2) / np.mean(added**2))
    assert noisy.dtype == np.float32 and noisy.shape == clean.shape
    assert abs(measured - snr_db) < 0.5


def test_noise_is_seeded() -> None:
    clean = _test_signal()
    first = noise(clean, SR, np.random.default_rng(5), snr_db=10)
    np.testing.assert_array_equal(first, noise(clean, SR, np.random.default_rng(5), snr_db=10))
    assert not np.array_equal(first, noise(clean, SR, np.random.default_rng(6), snr_db=10))


def test_telephone_removes_energy_above_4_khz() -> None:
    clean = _test_signal()
    phone = telephone(clean, SR, np.random.default_rng(0))
    assert phone.shape == clean.shape and phone.dtype == np.float32
    freqs, before = welch(clean, SR, nperseg=1024)
    _, after = welch(phone, SR, nperseg=1024)
    high = freqs > 4000
    in_band = (freqs > 400) & (freqs < 3200)
    assert after[high].sum() < 1e-3 * before[high].sum()
    assert after[in_band].sum() > 0.3 * before[in_band].sum()
    low = freqs < 150
    assert after[low].sum() < 0.05 * before[low].sum()


def test_mu_law_round_trip_is_close_but_quantised() -> None:
    x = np.linspace(-0.9, 0.9, 1001)
    y = mu_law_round_trip(x)
    assert np.max(np.abs(y - x)) < 0.03
    assert len(np.unique(np.round(y, 9))) <= 256


def test_reverb_keeps_length_and_level_and_smears_in_time() -> None:
    impulse = np.zeros(SR, dtype=np.float32)
    impulse[100] = 1.0
    wet = reverb(impulse, SR, np.random.default_rng(0), rt60=0.5)
    assert wet.shape == impulse.shape
    assert np.isclose(np.sqrt(np.mean(wet**2)), np.sqrt(np.mean(impulse**2)), rtol=1e-3)
    tail = wet[100 + int(0.05 * SR): 100 + int(0.3 * SR)]
    assert np.sum(tail**2) > 0.1 * np.sum(wet**2)
    longer = reverb(impulse, SR, np.random.default_rng(0), rt60=1.0)
    late = slice(100 + int(0.4 * SR), 100 + int(0.8 * SR))
    assert np.sum(longer[late] ** 2) > np.sum(wet[late] ** 2)


def test_gain() -> None:
    x = _test_signal()
    np.testing.assert_allclose(gain(x, SR, np.random.default_rng(0), gain_db=-6.0206), x * 0.5, rtol=1e-4)


def test_apply_chain_samples_ranges_per_call_and_is_seeded() -> None:
    chain = [
        {"type": "noise", "snr_db": [10, 20], "color": ["white", "pink"]},
        {"type": "telephone"},
        {"type": "reverb", "rt60": 0.3, "p": 0.5},
        {"type": "gain", "gain_db": [-3, 0]},
    ]
    x = _test_signal()
    out = apply_chain(x, SR, chain, np.random.default_rng(3))
    np.testing.assert_array_equal(out, apply_chain(x, SR, chain, np.random.default_rng(3)))
    resolved = [resolve_chain(chain, np.random.default_rng(seed)) for seed in range(40)]
    snrs = [steps[0]["snr_db"] for steps in resolved]
    assert all(10 <= snr <= 20 for snr in snrs) and len(set(snrs)) == 40
    assert {steps[0]["color"] for steps in resolved} == {"white", "pink"}
    with_reverb = sum(any(step["type"] == "reverb" for step in steps) for steps in resolved)
    assert 5 < with_reverb < 35
    np.testing.assert_array_equal(apply_chain(x, SR, [], np.random.default_rng(0)), x)


@pytest.mark.parametrize(
    ("chain", "message"),
    [
        ([{"type": "echo"}], r"channel\[0\]\.type: unknown effect 'echo'"),
        ([{"type": "noise"}], r"channel\[0\]: effect 'noise' needs snr_db"),
        ([{"type": "noise", "snr_db": 10, "level": 3}], r"channel\[0\]\.level"),
        ([{"type": "gain", "gain_db": [3, 1]}], r"low > high"),
        ([{"type": "gain", "gain_db": [1, 2, 3]}], r"\[low, high\]"),
        ([{"type": "gain", "gain_db": 1, "p": 2}], r"channel\[0\]\.p"),
        ({"type": "gain"}, r"must be a list"),
    ],
)
def test_validate_chain_names_the_bad_key(chain: object, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        validate_chain(chain)  # type: ignore[arg-type]


def test_registry_holds_the_effects() -> None:
    assert set(EFFECTS) == {"noise", "telephone", "reverb", "gain"}
