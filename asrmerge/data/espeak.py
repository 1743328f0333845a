"""Speech synthesis with libespeak-ng through ctypes (library and voice data from the ``espeakng-loader`` wheel).

libespeak-ng keeps its state (current voice, parameters, output callback) in process-global C variables, so it
is **not thread-safe**: this module initialises it once per process and serialises every call behind one lock.
Threads may share an EspeakSynthesizer (calls simply queue); for parallel synthesis use processes, each of which
initialises its own copy of the library.

Reproducibility: libespeak-ng carries synthesis state from one utterance to the next in C statics (the pitch
"flutter" table index, the "roughness" cycle counter, the automatic gain control), so by default the same text
can come out slightly different depending on what was spoken before. This module makes every call a pure
function of (text, voice, rate, pitch):

* it runs libespeak-ng on a private mirror of the voice data (symbolic links, built once per process in a
  temporary folder) in which every language and variant file ends with ``flutter 0`` and ``roughness 8``,
  turning off the two history-dependent modulations;
* it re-seeds espeak's noise generator (``espeak_ng_SetRandSeed``) before each utterance;
* it synthesises at a fixed volume well below clipping, so the gain control never engages.

Voice names follow espeak: ``<voice>[+<variant>]``, where ``<voice>`` is a voice file such as ``pt`` (European
Portuguese), ``pt-br``, ``en``, ``en-us``, ``es``, ``fr``, ``it``, ``de`` and ``<variant>`` a file of the
``voices/!v`` folder such as ``m1``..``m8``, ``f1``..``f5``, ``klatt``, ``whisper``.
"""

from __future__ import annotations

import ctypes
import functools
import logging
import tempfile
import threading
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from asrmerge.data.channel import resample
from asrmerge.data.languages import canonical_language
from asrmerge.defaults import default

logger = logging.getLogger(__name__)

NATIVE_SAMPLE_RATE = 22050  # what libespeak-ng produces

# espeak_AUDIO_OUTPUT, espeak_PARAMETER, flags and error codes from speak_lib.h.
_AUDIO_OUTPUT_SYNCHRONOUS = 2
_PARAM_RATE = 1
_PARAM_VOLUME = 2
_PARAM_PITCH = 3
_POS_CHARACTER = 1
_CHARS_UTF8 = 1
_EE_OK = 0

RATE_RANGE = (80, 450)  # words per minute accepted by espeak
PITCH_RANGE = (0, 99)
VOLUME = 75  # espeak volume (default 100): headroom so the gain control never engages
RANDOM_SEED = 0  # espeak's noise generator is re-seeded with this before every utterance
# Appended to every language and variant file of the private voice data (see the module docstring).
_VOICE_FILE_OVERRIDES = b"\n// asrmerge: history-independent synthesis\nflutter 0\nroughness 8\n"

_SynthCallback = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int, ctypes.c_void_p)


class _EspeakVoice(ctypes.Structure):
    _fields_ = [
        ("name", ctypes.c_char_p),
        ("languages", ctypes.c_void_p),  # sequence of (priority byte, NUL-terminated code), ended by a 0 byte
        ("identifier", ctypes.c_char_p),
        ("gender", ctypes.c_ubyte),
        ("age", ctypes.c_ubyte),
        ("variant", ctypes.c_ubyte),
        ("xx1", ctypes.c_ubyte),
        ("score", ctypes.c_int),
        ("spare", ctypes.c_void_p),
    ]


@dataclass(frozen=True)
class VoiceInfo:
    """An installed espeak voice: display name, identifier (``roa/pt``) and the languages it speaks."""

    name: str
    identifier: str
    languages: tuple[str, ...]

    @property
    def file_name(self) -> str:
        """The voice file's name (``pt``, ``pt-BR``): what ``<voice>`` in ``pt+f2`` refers to."""
        return self.identifier.rsplit("/", 1)[-1]

    def speaks(self, language: str) -> bool:
        """True if this voice lists ``language`` or a regional form of it (``en`` matches ``en-us``)."""
        wanted = canonical_language(language).lower()
        for code in self.languages:
            code = code.lower()
            if code == wanted or code.startswith(wanted + "-"):
                return True
        return False


def _mirror_voice_data(source: Path, target: Path) -> None:
    """Mirror espeak's data folder into ``target``: symbolic links everywhere, except for the language files
    (``lang/**``) and variant files (``voices/!v/*``), which are copied with `_VOICE_FILE_OVERRIDES` appended."""

    def patched(relative: str) -> bool:
        return relative == "lang" or relative.startswith("lang/") or relative in ("voices", "voices/!v") or \
            relative.startswith("voices/!v/")

    def mirror(folder: Path, destination: Path) -> None:
        destination.mkdir()
        for entry in sorted(folder.iterdir()):
            relative = entry.relative_to(source).as_posix()
            out = destination / entry.name
            if entry.is_dir() and patched(relative):
                mirror(entry, out)
            elif entry.is_file() and patched(relative):
                out.write_bytes(entry.read_bytes().rstrip(b"\n") + _VOICE_FILE_OVERRIDES)
            else:
                out.symlink_to(entry, target_is_directory=entry.is_dir())

    mirror(source, target)


class _Engine:
    """The process-wide libespeak-ng instance; use through `_engine()`."""

    def __init__(self) -> None:
        import espeakng_loader

        self.source_data_path = Path(espeakng_loader.get_data_path())
        # Removed when the process exits (the object is kept alive by the engine).
        self._data_folder = tempfile.TemporaryDirectory(prefix="asrmerge-espeak-")
        self.data_path = Path(self._data_folder.name) / "espeak-ng-data"
        _mirror_voice_data(self.source_data_path, self.data_path)
        self.lib = ctypes.CDLL(espeakng_loader.get_library_path())
        self.lib.espeak_Initialize.restype = ctypes.c_int
        self.lib.espeak_Initialize.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_char_p, ctypes.c_int]
        self.lib.espeak_SetVoiceByName.restype = ctypes.c_int
        self.lib.espeak_SetVoiceByName.argtypes = [ctypes.c_char_p]
        self.lib.espeak_SetParameter.restype = ctypes.c_int
        self.lib.espeak_SetParameter.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int]
        self.lib.espeak_Synth.restype = ctypes.c_int
        self.lib.espeak_Synth.argtypes = [
            ctypes.c_void_p, ctypes.c_size_t, ctypes.c_uint, ctypes.c_int, ctypes.c_uint, ctypes.c_uint,
            ctypes.c_void_p, ctypes.c_void_p,
        ]
        self.lib.espeak_Synchronize.restype = ctypes.c_int
        self.lib.espeak_ListVoices.restype = ctypes.POINTER(ctypes.POINTER(_EspeakVoice))
        self.lib.espeak_ListVoices.argtypes = [ctypes.c_void_p]
        self._set_rand_seed = getattr(self.lib, "espeak_ng_SetRandSeed", None)
        if self._set_rand_seed is None:
            logger.warning("libespeak-ng lacks espeak_ng_SetRandSeed: breathy voices may not be reproducible")
        else:
            self._set_rand_seed.restype = None
            self._set_rand_seed.argtypes = [ctypes.c_long]
        rate = self.lib.espeak_Initialize(_AUDIO_OUTPUT_SYNCHRONOUS, 0, str(self.data_path).encode(), 0)
        if rate != NATIVE_SAMPLE_RATE:
            raise RuntimeError(f"espeak_Initialize returned {rate}, expected {NATIVE_SAMPLE_RATE} Hz")
        self.lock = threading.Lock()
        self._chunks: list[np.ndarray] = []
        # Kept on the instance: the C library holds only a raw pointer to this callback.
        self._callback = _SynthCallback(self._collect)
        self.lib.espeak_SetSynthCallback(self._callback)
        self.voices = self._list_voices()
        self.variants = frozenset(p.name for p in (self.data_path / "voices" / "!v").iterdir() if p.is_file())
        logger.debug("libespeak-ng ready: %d voices, %d variants", len(self.voices), len(self.variants))

    def _collect(self, wav: ctypes.POINTER(ctypes.c_short), count: int, events: int) -> int:  # type: ignore[valid-type]
        if count > 0 and wav:
            self._chunks.append(np.ctypeslib.as_array(wav, shape=(count,)).copy())
        return 0

    def _list_voices(self) -> tuple[VoiceInfo, ...]:
        table = self.lib.espeak_ListVoices(None)
        voices: list[VoiceInfo] = []
        index = 0
        while table[index]:
            entry = table[index].contents
            voices.append(
                VoiceInfo(
                    name=(entry.name or b"").decode("utf-8", "replace"),
                    identifier=(entry.identifier or b"").decode("utf-8", "replace"),
                    languages=_parse_languages(entry.languages),
                )
            )
            index += 1
        return tuple(voices)

    def synthesize_native(self, text: str, voice: str, rate: int, pitch: int) -> np.ndarray:
        """int16 samples at 22050 Hz. The caller holds ``self.lock``."""
        status = self.lib.espeak_SetVoiceByName(voice.encode())
        if status != _EE_OK:
            raise ValueError(f"espeak-ng rejected voice {voice!r} (error {status})")
        for parameter, value in ((_PARAM_RATE, rate), (_PARAM_PITCH, pitch), (_PARAM_VOLUME, VOLUME)):
            status = self.lib.espeak_SetParameter(parameter, int(value), 0)
            if status != _EE_OK:
                raise RuntimeError(f"espeak_SetParameter({parameter}, {value}) failed (error {status})")
        if self._set_rand_seed is not None:
            self._set_rand_seed(RANDOM_SEED)
        self._chunks = []
        data = text.encode("utf-8") + b"\0"
        buffer = ctypes.create_string_buffer(data, len(data))
        status = self.lib.espeak_Synth(buffer, len(data), 0, _POS_CHARACTER, 0, _CHARS_UTF8, None, None)
        if status != _EE_OK:
            raise RuntimeError(f"espeak_Synth failed (error {status}) for {text!r}")
        self.lib.espeak_Synchronize()
        chunks, self._chunks = self._chunks, []
        return np.concatenate(chunks) if chunks else np.zeros(0, dtype=np.int16)


def _parse_languages(pointer: int | None) -> tuple[str, ...]:
    """Decode espeak's language list: repeated (priority byte, NUL-terminated code), ended by a 0 priority."""
    if not pointer:
        return ()
    codes: list[str] = []
    offset = 0
    while True:
        priority = ctypes.c_ubyte.from_address(pointer + offset).value
        if priority == 0:
            break
        code = ctypes.string_at(pointer + offset + 1)
        codes.append(code.decode("utf-8", "replace"))
        offset += 1 + len(code) + 1
    return tuple(codes)


_ENGINE: _Engine | None = None
_ENGINE_LOCK = threading.Lock()


def _engine() -> _Engine:
    """The process's libespeak-ng, initialised on first use."""
    global _ENGINE
    with _ENGINE_LOCK:
        if _ENGINE is None:
            _ENGINE = _Engine()
        return _ENGINE


def list_voices() -> tuple[VoiceInfo, ...]:
    """All installed espeak voices."""
    return _engine().voices


def list_variants() -> frozenset[str]:
    """All installed voice variants (the part after ``+``)."""
    return _engine().variants


@functools.lru_cache(maxsize=None)
def resolve_voice(voice: str) -> VoiceInfo:
    """The installed voice behind ``voice`` (``pt+f2`` -> the ``roa/pt`` voice).

    Raises ValueError naming ``voice`` when its voice or variant is not installed (espeak itself silently
    ignores an unknown variant, so it is checked here).
    """
    if not isinstance(voice, str) or not voice.strip():
        raise ValueError(f"voice must be a non-empty string, got {voice!r}")
    engine = _engine()
    base, plus, variant = voice.strip().partition("+")
    if plus and variant not in engine.variants:
        raise ValueError(
            f"unknown espeak voice variant {variant!r} in voice {voice!r} "
            f"(variants include m1..m8, f1..f5, klatt, whisper)"
        )
    wanted = base.lower()
    for info in engine.voices:
        if wanted in (info.file_name.lower(), info.identifier.lower(), info.name.lower()):
            return info
    raise ValueError(f"unknown espeak voice {base!r} in voice {voice!r} (examples: pt, pt-br, en, en-us, es, fr, it, de)")


def voice_speaks(voice: str, language: str) -> bool:
    """True if espeak voice ``voice`` (with or without variant) speaks spec language ``language``."""
    return resolve_voice(voice).speaks(language)


def languages_with_voices() -> frozenset[str]:
    """Every language code some installed voice speaks (lower case, as espeak lists them)."""
    return frozenset(code.lower() for info in list_voices() for code in info.languages)


class EspeakSynthesizer:
    """Text to speech with libespeak-ng, returning float32 mono audio at ``sample_rate``.

    Not thread-safe at the C level: all instances in a process share one libespeak-ng, and calls are
    serialised with a process-wide lock.
    """

    def __init__(self, sample_rate: int = default("corpus.sample_rate")) -> None:
        if sample_rate <= 0:
            raise ValueError(f"sample_rate must be positive, got {sample_rate}")
        self.sample_rate = int(sample_rate)
        self._engine = _engine()

    def synthesize(self, text: str, voice: str = "pt+f2", rate: int = 175, pitch: int = 50) -> np.ndarray:
        """Speak ``text`` with ``voice`` at ``rate`` words per minute and espeak ``pitch`` (0-99).

        Returns float32 samples in [-1, 1] at ``self.sample_rate``. ValueError for an empty text, an unknown
        voice or variant, or rate/pitch outside espeak's ranges.
        """
        if not isinstance(text, str) or not text.strip():
            raise ValueError(f"nothing to synthesise: {text!r}")
        if not RATE_RANGE[0] <= rate <= RATE_RANGE[1]:
            raise ValueError(f"rate {rate} outside espeak's {RATE_RANGE[0]}..{RATE_RANGE[1]} words per minute")
        if not PITCH_RANGE[0] <= pitch <= PITCH_RANGE[1]:
            raise ValueError(f"pitch {pitch} outside espeak's {PITCH_RANGE[0]}..{PITCH_RANGE[1]}")
        resolve_voice(voice)
        with self._engine.lock:
            samples = self._engine.synthesize_native(text, voice, int(rate), int(pitch))
        audio = samples.astype(np.float32) / 32768.0
        if audio.size:
            audio = resample(audio, NATIVE_SAMPLE_RATE, self.sample_rate).astype(np.float32)
        return audio
