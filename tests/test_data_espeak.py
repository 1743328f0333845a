"""espeak-ng synthesis through ctypes."""

from __future__ import annotations

import numpy as np
import pytest

from asrmerge.data.espeak import EspeakSynthesizer, list_voices, resolve_voice, voice_speaks


@pytest.fixture(scope="module")
def synth() -> EspeakSynthesizer:
    return EspeakSynthesizer(sample_rate=16000)


def test_synthesis_is_audible_speech_of_plausible_length(synth: EspeakSynthesizer) -> None:
    text = "amanhã vai estar céu limpo no algarve"
    audio = synth.synthesize(text, voice="pt+f2", rate=170, pitch=50)
    assert audio.dtype == np.float32 and audio.ndim == 1
    seconds = audio.size / 16000
    assert 1.0 < seconds < 5.0
    assert float(np.sqrt(np.mean(audio**2))) > 0.01
    assert float(np.max(np.abs(audio))) <= 1.0


def test_faster_rate_gives_shorter_audio_and_is_deterministic(synth: EspeakSynthesizer) -> None:
    text = "o tribunal julgou improcedente o recurso"
    slow = synth.synthesize(text, voice="pt+m3", rate=130)
    fast = synth.synthesize(text, voice="pt+m3", rate=260)
    assert fast.size < 0.7 * slow.size
    np.testing.assert_array_equal(slow, synth.synthesize(text, voice="pt+m3", rate=130))


def test_output_does_not_depend_on_what_was_spoken_before(synth: EspeakSynthesizer) -> None:
    reference = {voice: synth.synthesize("senhor presidente", voice=voice, rate=170, pitch=50) for voice in ("pt+f2", "pt+m3", "pt+klatt")}
    for history in (("pt+croak", 300, 99), ("en+m1", 90, 0), ("pt+f2", 200, 70)):
        synth.synthesize("um dois três quatro cinco seis", voice=history[0], rate=history[1], pitch=history[2])
        for voice, audio in reference.items():
            np.testing.assert_array_equal(audio, synth.synthesize("senhor presidente", voice=voice, rate=170, pitch=50))


def test_native_rate_needs_no_resampling() -> None:
    audio = EspeakSynthesizer(sample_rate=22050).synthesize("bom dia", voice="pt")
    resampled = EspeakSynthesizer(sample_rate=16000).synthesize("bom dia", voice="pt")
    assert abs(resampled.size - audio.size * 16000 / 22050) <= 1


@pytest.mark.parametrize("voice", ["xx-klingon", "pt+zz9", "pt+"])
def test_unknown_voice_is_a_value_error_naming_it(synth: EspeakSynthesizer, voice: str) -> None:
    with pytest.raises(ValueError, match="unknown espeak voice"):
        synth.synthesize("olá", voice=voice)


def test_bad_text_rate_and_pitch(synth: EspeakSynthesizer) -> None:
    with pytest.raises(ValueError, match="nothing to synthesise"):
        synth.synthesize("   ")
    with pytest.raises(ValueError, match="rate 20"):
        synth.synthesize("olá", rate=20)
    with pytest.raises(ValueError, match="pitch 120"):
        synth.synthesize("olá", pitch=120)


def test_voices_and_their_languages() -> None:
    assert len(list_voices()) > 50
    assert resolve_voice("pt+f2").file_name == "pt"
    assert resolve_voice("pt-br+m3").file_name == "pt-BR"
    assert voice_speaks("pt", "pt") and voice_speaks("pt-br", "pt-BR") and voice_speaks("en-us+f2", "en")
    assert not voice_speaks("pt", "pt-BR") and not voice_speaks("en", "pt")
    for language in ("es", "fr", "it", "de"):
        assert voice_speaks(f"{language}+m1", language)
