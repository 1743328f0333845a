"""Whole numbers spelled out in words (0 to 999 999) in each language of the corpus: `number_to_words`.

The template grammars (asrmerge.data.text) read `{#a-b}` and `{#digits:n}` tokens through it; each language has a
speller of its own (NUMBER_SPELLERS), with the feminine forms its grammars need (Portuguese uma/duas/duzentas,
Spanish una, French une, German eine).
"""

from __future__ import annotations

import functools
from collections.abc import Callable

import numpy as np

from asrmerge.data.languages import canonical_language

_PT_UNITS = (
    "zero um dois três quatro cinco seis sete oito nove dez onze doze treze catorze quinze "
    "dezasseis dezassete dezoito dezanove"
).split()
_PT_BR_UNITS = _PT_UNITS[:14] + "quatorze quinze dezesseis dezessete dezoito dezenove".split()
_PT_TENS = {2: "vinte", 3: "trinta", 4: "quarenta", 5: "cinquenta", 6: "sessenta", 7: "setenta", 8: "oitenta", 9: "noventa"}
_PT_HUNDREDS = {
    1: "cento", 2: "duzentos", 3: "trezentos", 4: "quatrocentos", 5: "quinhentos",
    6: "seiscentos", 7: "setecentos", 8: "oitocentos", 9: "novecentos",
}
_PT_FEMININE = {"um": "uma", "dois": "duas"}


def _pt_below_1000(n: int, feminine: bool, brazilian: bool) -> str:
    units = _PT_BR_UNITS if brazilian else _PT_UNITS
    if n == 100:
        return "cem"
    if n < 20:
        word = units[n]
        return _PT_FEMININE.get(word, word) if feminine else word
    parts: list[str] = []
    hundreds, rest = divmod(n, 100)
    if hundreds:
        word = _PT_HUNDREDS[hundreds]
        parts.append(word[:-2] + "as" if feminine and word.endswith("entos") else word)
    if rest:
        if rest < 20:
            parts.append(_pt_below_1000(rest, feminine, brazilian))
        else:
            tens, unit = divmod(rest, 10)
            parts.append(_PT_TENS[tens])
            if unit:
                parts.append(_pt_below_1000(unit, feminine, brazilian))
    return " e ".join(parts)


def _pt_words(n: int, feminine: bool, brazilian: bool) -> str:
    if n < 1000:
        return _pt_below_1000(n, feminine, brazilian)
    thousands, rest = divmod(n, 1000)
    head = "mil" if thousands == 1 else f"{_pt_below_1000(thousands, feminine, brazilian)} mil"
    if rest == 0:
        return head
    # "mil e cem", "dois mil e cinco", but "mil duzentos e trinta".
    joiner = " e " if rest < 100 or rest % 100 == 0 else " "
    return head + joiner + _pt_below_1000(rest, feminine, brazilian)


_EN_UNITS = (
    "zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen "
    "sixteen seventeen eighteen nineteen"
).split()
_EN_TENS = {2: "twenty", 3: "thirty", 4: "forty", 5: "fifty", 6: "sixty", 7: "seventy", 8: "eighty", 9: "ninety"}


def _en_below_100(n: int) -> str:
    if n < 20:
        return _EN_UNITS[n]
    tens, unit = divmod(n, 10)
    return _EN_TENS[tens] + (f" {_EN_UNITS[unit]}" if unit else "")


def _en_below_1000(n: int) -> str:
    hundreds, rest = divmod(n, 100)
    if not hundreds:
        return _en_below_100(rest)
    head = f"{_EN_UNITS[hundreds]} hundred"
    return head + (f" and {_en_below_100(rest)}" if rest else "")


def _en_words(n: int, feminine: bool) -> str:
    if n < 1000:
        return _en_below_1000(n)
    thousands, rest = divmod(n, 1000)
    head = f"{_en_below_1000(thousands)} thousand"
    if rest == 0:
        return head
    return head + (" and " if rest < 100 else " ") + _en_below_1000(rest)


_ES_BELOW_30 = (
    "cero uno dos tres cuatro cinco seis siete ocho nueve diez once doce trece catorce quince dieciséis "
    "diecisiete dieciocho diecinueve veinte veintiuno veintidós veintitrés veinticuatro veinticinco "
    "veintiséis veintisiete veintiocho veintinueve"
).split()
_ES_TENS = {3: "treinta", 4: "cuarenta", 5: "cincuenta", 6: "sesenta", 7: "setenta", 8: "ochenta", 9: "noventa"}
_ES_HUNDREDS = {
    1: "ciento", 2: "doscientos", 3: "trescientos", 4: "cuatrocientos", 5: "quinientos",
    6: "seiscientos", 7: "setecientos", 8: "ochocientos", 9: "novecientos",
}


def _es_below_1000(n: int, feminine: bool) -> str:
    if n == 100:
        return "cien"
    hundreds, rest = divmod(n, 100)
    parts: list[str] = []
    if hundreds:
        word = _ES_HUNDREDS[hundreds]
        parts.append(word[:-2] + "as" if feminine and word.endswith("ientos") else word)
    if rest or not hundreds:
        if rest < 30:
            word = _ES_BELOW_30[rest]
        else:
            tens, unit = divmod(rest, 10)
            word = _ES_TENS[tens] + (f" y {_ES_BELOW_30[unit]}" if unit else "")
        if feminine and word.endswith("uno"):
            word = word[:-1] + "a"
        parts.append(word)
    return " ".join(parts)


def _es_words(n: int, feminine: bool) -> str:
    if n < 1000:
        return _es_below_1000(n, feminine)
    thousands, rest = divmod(n, 1000)
    if thousands == 1:
        head = "mil"
    else:
        prefix = _es_below_1000(thousands, feminine)
        # Apocope before "mil": "veintiún mil", "treinta y un mil".
        if prefix.endswith("veintiuno"):
            prefix = prefix[:-3] + "ún"
        elif prefix.endswith("uno"):
            prefix = prefix[:-1]
        head = f"{prefix} mil"
    return head + (f" {_es_below_1000(rest, feminine)}" if rest else "")


_FR_BELOW_17 = "zéro un deux trois quatre cinq six sept huit neuf dix onze douze treize quatorze quinze seize".split()
_FR_TENS = {2: "vingt", 3: "trente", 4: "quarante", 5: "cinquante", 6: "soixante"}


def _fr_below_100(n: int) -> str:
    if n < 17:
        return _FR_BELOW_17[n]
    if n < 20:
        return f"dix {_FR_BELOW_17[n - 10]}"
    if n < 70:
        tens, unit = divmod(n, 10)
        if unit == 0:
            return _FR_TENS[tens]
        return _FR_TENS[tens] + (" et un" if unit == 1 else f" {_FR_BELOW_17[unit]}")
    if n < 80:
        return "soixante et onze" if n == 71 else f"soixante {_fr_below_100(n - 60)}"
    if n == 80:
        return "quatre vingts"
    return f"quatre vingt {_fr_below_100(n - 80)}"


def _fr_below_1000(n: int) -> str:
    hundreds, rest = divmod(n, 100)
    if not hundreds:
        return _fr_below_100(rest)
    head = "cent" if hundreds == 1 else f"{_FR_BELOW_17[hundreds]} cent"
    if rest == 0:
        return head + ("s" if hundreds > 1 else "")
    return f"{head} {_fr_below_100(rest)}"


def _fr_words(n: int, feminine: bool) -> str:
    if n < 1000:
        words = _fr_below_1000(n)
    else:
        thousands, rest = divmod(n, 1000)
        if thousands == 1:
            head = "mille"
        else:
            prefix = _fr_below_1000(thousands)
            # "deux cent mille", "quatre vingt mille": no plural s before "mille".
            if prefix.endswith(("cents", "vingts")):
                prefix = prefix[:-1]
            head = f"{prefix} mille"
        words = head + (f" {_fr_below_1000(rest)}" if rest else "")
    if feminine and (words == "un" or words.endswith((" un", " et un"))):
        words += "e"
    return words


_IT_BELOW_20 = (
    "zero uno due tre quattro cinque sei sette otto nove dieci undici dodici tredici quattordici quindici "
    "sedici diciassette diciotto diciannove"
).split()
_IT_TENS = {2: "venti", 3: "trenta", 4: "quaranta", 5: "cinquanta", 6: "sessanta", 7: "settanta", 8: "ottanta", 9: "novanta"}


def _it_below_100(n: int) -> str:
    if n < 20:
        return _IT_BELOW_20[n]
    tens, unit = divmod(n, 10)
    word = _IT_TENS[tens]
    if unit == 0:
        return word
    if unit in (1, 8):  # ventuno, ventotto
        word = word[:-1]
    return word + _IT_BELOW_20[unit]


def _it_below_1000(n: int) -> str:
    hundreds, rest = divmod(n, 100)
    if not hundreds:
        return _it_below_100(rest)
    head = "cento" if hundreds == 1 else _IT_BELOW_20[hundreds] + "cento"
    if rest == 0:
        return head
    tail = _it_below_100(rest)
    if tail.startswith("ott"):  # centotto, centottanta
        head = head[:-1]
    return head + tail


def _it_words(n: int, feminine: bool) -> str:
    if n < 1000:
        words = _it_below_1000(n)
    else:
        thousands, rest = divmod(n, 1000)
        head = "mille" if thousands == 1 else _it_below_1000(thousands) + "mila"
        words = head + (_it_below_1000(rest) if rest else "")
    if len(words) > 3 and words.endswith("tre"):  # ventitré, centotré
        words = words[:-3] + "tré"
    if feminine and words == "uno":
        words = "una"
    return words


_DE_BELOW_20 = (
    "null eins zwei drei vier fünf sechs sieben acht neun zehn elf zwölf dreizehn vierzehn fünfzehn "
    "sechzehn siebzehn achtzehn neunzehn"
).split()
_DE_TENS = {2: "zwanzig", 3: "dreißig", 4: "vierzig", 5: "fünfzig", 6: "sechzig", 7: "siebzig", 8: "achtzig", 9: "neunzig"}


def _de_below_1000(n: int) -> str:
    hundreds, rest = divmod(n, 100)
    head = ""
    if hundreds:
        head = "hundert" if hundreds == 1 else _DE_BELOW_20[hundreds] + "hundert"
    if rest == 0:
        return head or "null"
    if rest < 20:
        tail = _DE_BELOW_20[rest]
    else:
        tens, unit = divmod(rest, 10)
        tail = _DE_TENS[tens] if unit == 0 else ("ein" if unit == 1 else _DE_BELOW_20[unit]) + "und" + _DE_TENS[tens]
    return head + tail


def _de_words(n: int, feminine: bool) -> str:
    if n < 1000:
        words = _de_below_1000(n)
    else:
        thousands, rest = divmod(n, 1000)
        prefix = "" if thousands == 1 else _de_below_1000(thousands)
        if prefix.endswith("eins"):
            prefix = prefix[:-1]
        words = prefix + "tausend" + (_de_below_1000(rest) if rest else "")
    if feminine and words == "eins":
        words = "eine"
    return words


NumberSpeller = Callable[[int, bool], str]

# language -> speller(n, feminine); numbers from 0 to 999 999.
NUMBER_SPELLERS: dict[str, NumberSpeller] = {
    "pt": functools.partial(_pt_words, brazilian=False),
    "pt-BR": functools.partial(_pt_words, brazilian=True),
    "en": _en_words,
    "es": _es_words,
    "fr": _fr_words,
    "it": _it_words,
    "de": _de_words,
}

MAX_NUMBER = 999_999


def number_to_words(n: int, language: str = "pt", *, feminine: bool = False) -> str:
    """Spell a whole number 0..999 999 in words, lower case, words separated by spaces.

    ``language`` is a spec language code (``pt``, ``pt-BR``, ``en``, ``es``, ``fr``, ``it``, ``de``); a regional
    code without a speller of its own falls back to its base language (``en-US`` -> ``en``).
    """
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)):
        raise ValueError(f"number_to_words needs an integer, got {n!r}")
    n = int(n)
    if not 0 <= n <= MAX_NUMBER:
        raise ValueError(f"number_to_words supports 0..{MAX_NUMBER}, got {n}")
    code = canonical_language(language)
    speller = NUMBER_SPELLERS.get(code) or NUMBER_SPELLERS.get(code.split("-", 1)[0])
    if speller is None:
        raise ValueError(f"no number speller for language {language!r} (have: {', '.join(sorted(NUMBER_SPELLERS))})")
    return speller(n, feminine)
