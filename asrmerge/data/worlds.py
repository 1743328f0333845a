"""The demo world as data: the sets of the offline demo (`corpus.world: demo`), plain specs ready for YAML.

Ten European Portuguese domains, each with its own vocabulary, voices, speaking rate, pitch and channel, five
out-of-domain test sets, Brazilian Portuguese, English and multilingual test sets, two long-form sets and the
multilingual pretraining mix. A set spec's keys are those of asrmerge.data.corpus (generated sets) and
asrmerge.data.recordings (long-form sets); `extends: <name>` in a config starts from the set of this world.
"""

from __future__ import annotations

from typing import Any

from asrmerge.data.recordings import is_recordings_spec
from asrmerge.data.text import EP_DOMAINS
from asrmerge.data.user_manifest import user_set_sources

DOMAIN_SIZES = {"train": 120, "validation": 20, "test": 30}
TEST_SIZES = {"test": 30}
# The pretraining mix: half template sentences (some with open-vocabulary slots), half random word sequences.
GENERAL_SIZES = {"train": 10_000, "validation": 140}
GENERAL_PT_SIZES = {"train": 8_000, "validation": 60}
GENERAL_TEXTS = ["general", "words"]

# Per-domain speakers and recording conditions: each domain has its own voices, speaking rate and pitch, and its
# own channel, so that a fine-tune on one domain learns something the others do not share.
_DOMAIN_CONDITIONS: dict[str, dict[str, Any]] = {
    "news": {
        "description": "broadcast news read in a studio",
        "voices": ["pt+m1", "pt+f2"], "rate": [165, 185], "pitch": [40, 55],
        "channel": [{"type": "gain", "gain_db": [-3.0, 0.0]}],
    },
    "parliament": {
        "description": "plenary speeches in a large reverberant chamber",
        "voices": ["pt+m3", "pt+f1", "pt+m7"], "rate": [148, 175], "pitch": [30, 50],
        "channel": [{"type": "reverb", "rt60": [0.6, 1.0], "drr_db": [-3.0, 3.0]}],
    },
    "medical": {
        "description": "fast clinical dictation on a hissy close-talk microphone",
        "voices": ["pt+f3", "pt+m2"], "rate": [180, 215], "pitch": [45, 65],
        "channel": [{"type": "noise", "snr_db": [25.0, 35.0], "color": "white"}],
    },
    "legal": {
        "description": "slow legal reading in a small courtroom",
        "voices": ["pt+m4", "pt+f5"], "rate": [145, 168], "pitch": [35, 50],
        "channel": [
            {"type": "reverb", "rt60": [0.25, 0.45], "drr_db": [3.0, 8.0]},
            {"type": "noise", "snr_db": [20.0, 30.0], "color": "pink"},
        ],
    },
    "banking": {
        "description": "telephone banking over a narrow-band mu-law line",
        "voices": ["pt+f1", "pt+m5"], "rate": [160, 190], "pitch": [45, 65],
        "channel": [
            {"type": "noise", "snr_db": [20.0, 30.0], "color": "white"},
            {"type": "telephone"},
        ],
    },
    "weather": {
        "description": "weather forecasts in background noise",
        "voices": ["pt+m1", "pt+f3"], "rate": [150, 190], "pitch": [30, 60],
        "channel": [{"type": "noise", "snr_db": [10.0, 20.0], "color": "white"}],
    },
    "sports": {
        "description": "excited sports commentary over crowd noise",
        "voices": ["pt+m6", "pt+m2"], "rate": [185, 225], "pitch": [60, 85],
        "channel": [
            {"type": "noise", "snr_db": [8.0, 15.0], "color": "babble"},
            {"type": "gain", "gain_db": [0.0, 4.0]},
        ],
    },
    "addresses": {
        "description": "addresses and numbers dictated on a speakerphone call",
        "voices": ["pt+f4", "pt+m3"], "rate": [140, 170], "pitch": [40, 60],
        "channel": [
            {"type": "reverb", "rt60": [0.2, 0.35], "drr_db": [5.0, 10.0]},
            {"type": "telephone"},
        ],
    },
    "tech_support": {
        "description": "help desk calls: telephone line with low-frequency rumble",
        "voices": ["pt+m2", "pt+f2"], "rate": [165, 200], "pitch": [35, 55],
        "channel": [
            {"type": "telephone"},
            {"type": "noise", "snr_db": [15.0, 25.0], "color": "brown"},
        ],
    },
    "conversation": {
        "description": "casual conversation in a living room",
        "voices": ["pt+f5", "pt+m4", "pt+f4"], "rate": [150, 210], "pitch": [20, 80],
        "channel": [
            {"type": "reverb", "rt60": [0.3, 0.6], "drr_db": [0.0, 6.0]},
            {"type": "noise", "snr_db": [15.0, 25.0], "color": "pink"},
        ],
    },
}

# EP out-of-domain test sets: vocabulary, voices and channels in combinations that no domain trains on.
_OOD_SETS: dict[str, dict[str, Any]] = {
    "ood_tourism_hall": {
        "description": "unseen vocabulary (tourism) in a reverberant hall with babble",
        "text": "tourism", "voices": ["pt+m8", "pt+f4"], "rate": [150, 185], "pitch": [35, 60],
        "channel": [
            {"type": "reverb", "rt60": [0.8, 1.2], "drr_db": [-2.0, 2.0]},
            {"type": "noise", "snr_db": [12.0, 20.0], "color": "babble"},
        ],
    },
    "ood_everyday_phone": {
        "description": "everyday EP sentences over a noisy telephone line",
        "text": "general", "voices": ["pt+m7", "pt+f5"], "rate": [150, 190], "pitch": [30, 60],
        "channel": [
            {"type": "telephone"},
            {"type": "noise", "snr_db": [10.0, 20.0], "color": "brown"},
        ],
    },
    "ood_medical_farfield": {
        "description": "medical vocabulary recorded far from the microphone",
        "text": "medical", "voices": ["pt+m6", "pt+f1"], "rate": [150, 180], "pitch": [40, 60],
        "channel": [
            {"type": "reverb", "rt60": [0.5, 0.9], "drr_db": [-4.0, 0.0]},
            {"type": "noise", "snr_db": [10.0, 18.0], "color": "pink"},
        ],
    },
    "ood_mixed_fast_phone": {
        "description": "legal, sports and weather vocabulary, spoken fast on a quiet telephone line",
        "text": ["legal", "sports", "weather"], "voices": ["pt+m5", "pt+f2"], "rate": [205, 235], "pitch": [40, 70],
        "channel": [{"type": "telephone"}, {"type": "gain", "gain_db": [-8.0, -3.0]}],
    },
    "ood_news_unseen_voices": {
        "description": "news and parliament vocabulary from voice variants no domain uses, in babble",
        "text": ["news", "parliament"], "voices": ["pt+klatt", "pt+Henrique"], "rate": [155, 185], "pitch": [35, 60],
        "channel": [{"type": "noise", "snr_db": [6.0, 12.0], "color": "babble"}],
    },
}

# Pretraining voices: named espeak variants that no domain or test set uses (those use m1..m8, f1..f5, klatt and
# Henrique), so every domain and test voice is new to the foundation.
_GENERAL_VOICES: dict[str, list[str]] = {
    "pt": ["pt+Alex", "pt+Andrea", "pt+Diogo", "pt+Hugo", "pt+Mario", "pt+Annie", "pt+benjamin", "pt+linda",
           "pt+marcelo", "pt+pedro", "pt+steph", "pt+antonio"],
    "pt-BR": ["pt-br+Alex", "pt-br+Andrea", "pt-br+marcelo", "pt-br+linda"],
    "en": ["en+Alex", "en+Annie", "en-us+david", "en-us+belinda"],
    "es": ["es+Diogo", "es+linda", "es+miguel"],
    "fr": ["fr+Andrea", "fr+michel", "fr+steph"],
    "it": ["it+Mario", "it+Annie", "it+sandro"],
    "de": ["de+boris", "de+anika", "de+norbert"],
}
# Everyday variety of the pretraining mix; telephone lines, babble and rumble stay domain conditions.
_GENERAL_CHANNEL: list[dict[str, Any]] = [
    {"type": "noise", "snr_db": [18.0, 40.0], "color": ["white", "pink"], "p": 0.35},
    {"type": "reverb", "rt60": [0.2, 0.6], "drr_db": [2.0, 10.0], "p": 0.25},
]
_GENERAL_RATE, _GENERAL_PITCH = [130, 230], [20, 85]
# Held-out EP test voices for the general sets (plain m/f variants, like the domains, clean channel).
_GENERAL_TEST_VOICES = ["pt+m2", "pt+f4", "pt+m6", "pt+f1"]


# Long-form sets: one in-domain and one out-of-domain set's test sentences, joined into recordings longer than the
# window, so that the same sentences are scored short-form and long-form.
LONG_FORM_SOURCES = {"banking_long": "banking", "ood_tourism_long": "ood_tourism_hall"}


def default_sets() -> dict[str, dict[str, Any]]:
    """A complete spec dict for the demo world (plain data, ready for YAML):

    * the ten EP domains (role ``domain``; train/validation/test), each with its own vocabulary, voices, rate,
      pitch and channel;
    * five EP out-of-domain test sets (role ``ood``; test only);
    * ``brazilian`` (pt-BR), ``english`` and ``multilingual`` (es, fr, it, de) test sets;
    * ``general_ep`` (everyday EP sentences) and ``ep_random_words`` (random EP word sequences, role
      ``words_test``: listening measured apart from recall), clean, voices no domain trains on;
    * ``banking_long`` and ``ood_tourism_long`` (role ``long_form``): the test sentences of banking and of
      ood_tourism_hall joined into recordings of 60-90 s;
    * ``general`` and ``general_pt``: the pretraining mix (train/validation; seven languages, then EP alone),
      template sentences and random word sequences, named voices no other set uses, mostly clean.
    """
    sets: dict[str, dict[str, Any]] = {}
    for domain in EP_DOMAINS:
        conditions = _DOMAIN_CONDITIONS[domain]
        sets[domain] = {
            "role": "domain", "language": "pt", "text": domain,
            "description": conditions["description"],
            "voices": list(conditions["voices"]), "rate": list(conditions["rate"]), "pitch": list(conditions["pitch"]),
            "channel": [dict(step) for step in conditions["channel"]],
            "sizes": dict(DOMAIN_SIZES),
        }
    for name, conditions in _OOD_SETS.items():
        sets[name] = {
            "role": "ood", "language": "pt",
            "text": list(conditions["text"]) if isinstance(conditions["text"], list) else conditions["text"],
            "description": conditions["description"],
            "voices": list(conditions["voices"]), "rate": list(conditions["rate"]), "pitch": list(conditions["pitch"]),
            "channel": [dict(step) for step in conditions["channel"]],
            "sizes": dict(TEST_SIZES),
        }
    sets["brazilian"] = {
        "role": "brazilian", "language": "pt-BR", "text": "general",
        "description": "Brazilian Portuguese everyday sentences",
        "voices": ["pt-br+m1", "pt-br+f2", "pt-br+m3", "pt-br+f4"], "rate": [150, 190], "pitch": [35, 60],
        "channel": [], "sizes": dict(TEST_SIZES),
    }
    sets["english"] = {
        "role": "english", "language": "en", "text": "general",
        "description": "English everyday sentences",
        "voices": ["en+m2", "en+f3", "en-us+m3", "en-us+f2"], "rate": [150, 190], "pitch": [35, 60],
        "channel": [], "sizes": dict(TEST_SIZES),
    }
    sets["multilingual"] = {
        "role": "multilingual", "language": ["es", "fr", "it", "de"], "text": "general",
        "description": "Spanish, French, Italian and German everyday sentences",
        "voices": {
            "es": ["es+m2", "es+f3"], "fr": ["fr+m1", "fr+f2"], "it": ["it+m2", "it+f1"], "de": ["de+m2", "de+f3"],
        },
        "rate": [150, 190], "pitch": [35, 60], "channel": [], "sizes": dict(TEST_SIZES),
    }
    sets["general_ep"] = {
        "role": "general_test", "language": "pt", "text": "general",
        "description": "everyday EP sentences (with open-vocabulary slots), clean",
        "voices": list(_GENERAL_TEST_VOICES), "rate": [150, 190], "pitch": [35, 60], "channel": [],
        "sizes": dict(TEST_SIZES),
    }
    sets["ep_random_words"] = {
        "role": "words_test", "language": "pt", "text": "words",
        "description": "random EP word sequences, clean: listening measured apart from recall",
        "voices": list(_GENERAL_TEST_VOICES), "rate": [150, 190], "pitch": [35, 60], "channel": [],
        "sizes": dict(TEST_SIZES),
    }
    for name, source in LONG_FORM_SOURCES.items():
        sets[name] = {
            "role": "long_form", "recordings_of": source,
            "description": f"the test utterances of {source} joined into recordings of 60-90 s (asrmerge.data.recordings)",
            "recording_seconds": [60, 90], "pause_seconds": [0.4, 1.2],
        }
    sets["general"] = {
        "role": "general", "language": list(_GENERAL_VOICES), "text": list(GENERAL_TEXTS),
        "description": "multilingual pretraining mix: mostly clean, some noise and reverberation",
        "voices": {language: list(voices) for language, voices in _GENERAL_VOICES.items()},
        "rate": list(_GENERAL_RATE), "pitch": list(_GENERAL_PITCH),
        "channel": [dict(step) for step in _GENERAL_CHANNEL],
        "sizes": dict(GENERAL_SIZES),
    }
    sets["general_pt"] = {
        "role": "general", "language": "pt", "text": list(GENERAL_TEXTS),
        "description": "European Portuguese share of the pretraining mix",
        "voices": list(_GENERAL_VOICES["pt"]), "rate": list(_GENERAL_RATE), "pitch": list(_GENERAL_PITCH),
        "channel": [dict(step) for step in _GENERAL_CHANNEL],
        "sizes": dict(GENERAL_PT_SIZES),
    }
    return sets


#: The built-in worlds a config names in `corpus.world`.
WORLDS = {"demo": default_sets}


def expand_world(config: dict) -> None:
    """Put the sets of `corpus.world` under `corpus.sets`, with the config's own entries over them (see the schema);
    ValueError naming the config key at fault."""
    corpus = config.get("corpus")
    if not isinstance(corpus, dict) or corpus.get("world") is None:
        return
    world = corpus["world"]
    if not isinstance(world, str) or world not in WORLDS:
        raise ValueError(f"config key corpus.world: unknown world {world!r} (known: {', '.join(WORLDS)})")
    given = corpus.get("sets") or {}
    if not isinstance(given, dict):
        raise ValueError("config key corpus.sets: must be a mapping of set name -> set")
    sizes = corpus.get("world_sizes") or {}
    if not isinstance(sizes, dict) or not all(isinstance(value, dict) for value in sizes.values()):
        raise ValueError("config key corpus.world_sizes: must map a role to {split: size}")
    sets = WORLDS[world]()
    for spec in sets.values():
        if "sizes" in spec:
            spec["sizes"] = dict(sizes.get(spec["role"], spec["sizes"]))
    for name, spec in given.items():
        if spec is None:
            sets.pop(name, None)
            # the world's long-form set made of it goes too (it would have nothing to join)
            for derived in [n for n, s in sets.items() if is_recordings_spec(s) and s["recordings_of"] == name]:
                if derived not in given:
                    sets.pop(derived)
        elif name in sets and isinstance(spec, dict) and not user_set_sources(spec):
            sets[name] = {**sets[name], **spec}
        else:
            sets[name] = spec
    corpus["sets"] = sets
    # Expanded: what remains is a plain list of sets (validating it again changes nothing).
    corpus["world"], corpus["world_sizes"] = None, {}
