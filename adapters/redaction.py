"""Redaction of personal data from text that leaves the hub's protected store: log lines
and dead-letter details. A seatbelt, not the plan: code should not log personal data.

- a BSN, masked "[BSN]": 9 digits that pass the 11-proef, written as one run
  ("123456782") or in any grouping with single separators from " ", "." and "-"
  ("1234.56.782", "123 456 782", "12 34 56 782", "12-345-67-82")
- every word of a patient name, e-mail and phone number the hub has parsed ("remembered")
- a remembered phone number however a line spells it: with spaces, dots, hyphens,
  slashes or parentheses in any grouping ("06 1234 5678", "(06) 12345678",
  "06/12.34.56.78"), and with the 0, +31, 0031 or +31 (0) prefix of the same Dutch number
  ("+31 6 1234 5678", "+31612345678"); masked "[redacted]"

Digits are never masked in part: a BSN or a phone number is made of whole runs of digits.
Both are looked for only in runs of at least 9 digits joined by separators, which most
values do not have (one regex search finds that). The trade-offs of the rules:

- A run of exactly 9 digits is a BSN wherever it stands, also beside other numbers
  ("2026-03-01 123456782 2"), as before. So "+31 612345678" shows as "+31 [BSN]" when
  those 9 digits happen to pass the 11-proef (1 number in 11) and the phone number was
  not remembered (a remembered one is "[redacted]" first).
- A BSN written in groups is one only when no further group continues it with a
  separator it uses itself, not right after "+" or "(0)", and touching no letter:
  "123 456 782 1", "06 1234 5678", "+31 6 1234 5678", "+31 (0)6-1234-5678",
  "NL91 ABNA 0417 1643 00" and the UUID "2c44a016-7132-42e5-..." are longer numbers or
  ids, never partly masked; "2026-03-01 1234.56.782" is a date and a BSN. The price: a
  grouped BSN written after another number with the same separator ("12:30:45 123 456
  782", "stap 2 123 456 782") or glued to a word ("x999-900-043", masked before) is not
  masked; one written as one run is ("stap 2 123456782", "x999900043").
- A phone number in a line starts with its prefix: a "0", "00" or "+", which is how
  numbers are written; its digits are compared with the country code, "+31 (0)" and the
  Dutch trunk "0" read as +31, so all spellings of one Dutch number are one. Bare digits
  ("612345678", "31612345678") are not taken for a phone number (the exact spelling
  remembered still is masked, as a word). Within a run of digit groups joined by up to
  three separators each sequence of whole groups from a "0" is compared, the widest
  first, so "bel 06 1234 5678 om 14 30" keeps "om 14 30". A number of fewer than 10
  digits with its country code is not compared (a remembered "0800-1234" is masked only
  as written, as before); only Dutch numbers have their prefixes unified.
"""

from __future__ import annotations

import functools
import re
import threading
from collections import OrderedDict
from collections.abc import Iterable

from schemas.identifiers import bsn_valid

BSN_MASK = "[BSN]"
PERSONAL_MASK = "[redacted]"
# A run of at least 9 digits joined by up to three separators a phone number is written
# with (spaces, dots, hyphens, slashes, parentheses), with up to two "+" or "(" before it
# and a ")" after it: where a BSN or a phone number can be. Both regexes start with a
# character class, so the engine skips to the candidates (about 3 times fewer
# instructions than with a lookbehind first on a long line), then refuse to start in the
# middle of a run of digits (as many fewer on an id full of digits).
_SEPARATORS = " \t\u00a0\u202f.-\u2010\u2011\u2012\u2013/()"
_NUMBER_LIKE = re.compile(
    rf"[+(0-9](?<![0-9][0-9])(?:(?<=[0-9])|(?<=[+(])[+(]?[0-9])"
    rf"(?:[{re.escape(_SEPARATORS)}]{{0,3}}[0-9]){{8,}}\)?"
)
# Within one: a run of at least 9 digits with single separators between them, as long as
# it goes on, in which `_bsn` looks for the BSNs.
_BSN_LIKE = re.compile(r"[0-9](?<![0-9][0-9])(?:[ .-]?[0-9]){8,}")
_BSN_SEPARATOR = re.compile(r"([ .-])")
_DIGITS = re.compile(r"[0-9]+")
_PHONE_START = frozenset("+(0123456789")
_UNSPELLED = str.maketrans("", "", "+" + _SEPARATORS)
_PHONE_MIN_DIGITS = 10  # with the country code (a Dutch number has 11)
_PHONE_MAX_DIGITS = 15  # E.164
_PHONE_MAX_SPELLED = _PHONE_MAX_DIGITS + 2  # with "00" before the country code
_WORD = re.compile(
    r"[\w.+-]+@[\w-]+(?:\.[\w-]+)+|\+?[0-9][0-9-]{7,}[0-9]|[^\W\d_](?:[\w’-]|'(?=\w))*"
)
# Tokens too common to redact on their own (Dutch name prefixes); whole names still are.
_COMMON = frozenset(
    "van de der den het ten ter te in op la le du da di del des von vom zu aan bij uit 't".split()
)
_MAX_REMEMBERED = 200_000


def _phone_key(digits: str, plus: bool) -> int | None:
    """The key of a phone number among the remembered words: its digits with the country
    code as a number (a word is a str, so never equal to one), from its digits written
    with a "+" before them or not. The same for each spelling of one Dutch number:
    "0612345678", "+31612345678", "0031612345678" and "+31 (0)6 12345678" all give
    31612345678. None for digits that are no phone number: without a "+", a "0" or a "00"
    before them, or too few or too many. (Indexing, not str methods: this is called for
    each remembered phone number and each number in a value that starts with a "0".)"""
    if len(digits) < 2:
        return None
    if not plus:
        if digits[0] != "0":
            return None
        # "00": the international access code, before a country code; "0": Dutch trunk
        digits = digits[2:] if digits[1] == "0" else "31" + digits[1:]
    if digits[:3] == "310":
        digits = "31" + digits[3:]  # +31 (0)6 ...: no Dutch number starts with a 0
    if _PHONE_MIN_DIGITS <= len(digits) <= _PHONE_MAX_DIGITS and digits[0] != "0":
        return int(digits)
    return None


@functools.lru_cache(maxsize=4096)  # a patient's number comes again with the consent
def _phone_of(value: str) -> int | None:
    """The `_phone_key` of a remembered value made of digits, separators and a "+"."""
    digits = value.translate(_UNSPELLED)
    if len(digits) < 9 or not (digits.isascii() and digits.isdigit()):
        return None
    return _phone_key(digits, "+" in value)


class _Remembered:
    def __init__(self) -> None:
        self._tokens: OrderedDict[str | int, None] = OrderedDict()
        self._lock = threading.Lock()
        self.phones = 0  # how many of the tokens are phone numbers' keys (ints)

    def add(self, values: Iterable[str | None]) -> None:
        with self._lock:
            tokens = self._tokens
            for value in values:
                if not value:
                    continue
                for token in (value, value.replace(" ", ""), *value.split()):
                    key = token.strip().casefold()
                    if len(key) < 2 or key in _COMMON:
                        continue
                    tokens[key] = None
                    tokens.move_to_end(key)
                # a phone number: digits, separators and a "+" (not "7901 AB", "Dorpsweg 1")
                if value[-1] in "0123456789 " and value.lstrip()[:1] in _PHONE_START:
                    phone = _phone_of(value.strip())
                    if phone is not None:
                        self.phones += phone not in tokens
                        tokens[phone] = None
                        tokens.move_to_end(phone)
            while len(tokens) > _MAX_REMEMBERED:
                key, _ = tokens.popitem(last=False)
                self.phones -= isinstance(key, int)

    def __contains__(self, token: str) -> bool:
        return token.casefold() in self._tokens

    def clear(self) -> None:
        with self._lock:
            self._tokens.clear()
            self.phones = 0


REMEMBERED = _Remembered()


def remember(values: Iterable[str | None]) -> None:
    """Register personal strings (names, phone, e-mail) that must never reach a log line."""
    REMEMBERED.add(values)


def _bsn(match: re.Match[str]) -> str:
    """A `_BSN_LIKE` run (in a `_NUMBER_LIKE` one, with the characters beside that) with
    its BSNs masked: a group of 9 digits, or consecutive groups of 9 digits together that
    no group beside them continues with a separator they use, not right after "+" or ")"
    and touching no letter (see the module docstring)."""
    run = match.group(0)
    if run.isdigit():
        return BSN_MASK if len(run) == 9 and bsn_valid(run) else run
    parts = _BSN_SEPARATOR.split(run)  # group, separator, group, ..., group
    groups, separators = parts[0::2], parts[1::2]
    text, start, end = match.string, match.start(), match.end()
    before, after = text[start - 1 : start] if start else "", text[end : end + 1]
    after_phone_sign = before in ("+", ")")
    glued_before, glued_after = before.isalpha(), after.isalpha()  # part of an id: 3e-12-...
    last = len(groups) - 1
    i = 0
    while i <= last:
        j, digits = i, groups[i]
        while len(digits) < 9 and j < last:
            j += 1
            digits += groups[j]
        if len(digits) == 9 and bsn_valid(digits):
            used = separators[i:j]
            if j == i or not (
                after_phone_sign
                or (separators[i - 1] in used if i > 0 else glued_before)
                or (separators[j] in used if j < last else glued_after)
            ):
                parts[2 * i : 2 * j + 1] = [BSN_MASK] + [""] * (2 * (j - i))
                i = j + 1
                continue
        i += 1
    return "".join(parts)


def _phones(run: str) -> str:
    """A `_NUMBER_LIKE` run with the remembered phone numbers in it masked: the widest
    sequence of whole digit groups first, from a group that starts with a "0" (or the
    run's first after a "+"), with the run's leading "+" and the brackets that belong
    to it."""
    tokens = REMEMBERED._tokens  # noqa: SLF001
    groups = list(_DIGITS.finditer(run))
    plus = "+" in run[:2]
    out: list[str] = []
    done = i = 0
    while i < len(groups):
        hit = -1
        if run[groups[i].start()] == "0" or (plus and i == 0):
            digits = ""
            for j in range(i, len(groups)):
                digits += groups[j].group()
                if len(digits) > _PHONE_MAX_SPELLED:
                    break
                if _phone_key(digits, plus and i == 0) in tokens:
                    hit = j
        if hit < 0:
            i += 1
            continue
        start, end = groups[i].start(), groups[hit].end()
        body = run[start:end]
        if i == 0:
            lead = run[:start]
            if plus:
                start = lead.index("+")
            if "(" in lead and body.count(")") > body.count("("):
                start = min(start, lead.index("("))
        if hit == len(groups) - 1 and run.endswith(")") and body.count("(") > body.count(")"):
            end = len(run)
        out += (run[done:start], PERSONAL_MASK)
        done, i = end, hit + 1
    if not out:
        return run
    out.append(run[done:])
    return "".join(out)


def _bsns(match: re.Match[str], run: str) -> str:
    """The run of a `_NUMBER_LIKE` match with its BSNs masked, `_bsn` seeing the
    characters beside it (never digits or parts of a BSN)."""
    text, start, end = match.string, match.start(), match.end()
    before, after = text[start - 1 : start] if start else "", text[end : end + 1]
    masked = _BSN_LIKE.sub(_bsn, before + run + after)
    return masked[len(before) : len(masked) - len(after)]


def _number(match: re.Match[str]) -> str:
    return _bsns(match, match.group(0))


def _number_or_phone(match: re.Match[str]) -> str:
    # the phone numbers first: "+31 612345678" is a phone number then, not "+31 [BSN]"
    return _bsns(match, _phones(match.group(0)))


def _run_shape(match: re.Match[str], keys: list[int]) -> bool:
    """Whether `_bsn` masks something in a `_NUMBER_LIKE` match; adds the keys of the phone
    numbers `_phones` would mask in it, if remembered, to keys. Most runs hold no 9 digits
    that pass the 11-proef, and `_bsn` is asked only about the others."""
    run = match.group(0)
    groups = _DIGITS.findall(run)
    plus = "+" in run[:2]  # a "+" is only ever among the two characters before the digits
    candidate = False
    for i in range(len(groups)):
        phone = groups[i][0] == "0" or (plus and i == 0)
        digits = ""
        for group in groups[i:]:
            digits += group
            if len(digits) < 9:
                continue
            if len(digits) == 9 and not candidate:
                candidate = bsn_valid(digits)
            if not phone or len(digits) > _PHONE_MAX_SPELLED:
                break
            if key := _phone_key(digits, plus and i == 0):
                keys.append(key)
    return candidate and _bsns(match, run) != run


def _phone_keys(text: str) -> tuple[int, ...]:
    keys: list[int] = []
    for match in _NUMBER_LIKE.finditer(text):
        _run_shape(match, keys)
    return tuple(keys)


def _word(match: re.Match[str]) -> str:
    return PERSONAL_MASK if match.group(0) in REMEMBERED else match.group(0)


# Log lines repeat their short values (ids, outcomes, logger names): what each one holds
# that could need masking is worked out once. Whether it needs masking is decided anew
# every time, against what is remembered now (a BSN needs no memory: the shape says it).
_Shape = tuple[bool, tuple[str | int, ...], tuple[int, ...]]
_SHAPES: dict[str, _Shape] = {}
_SHAPES_MAX = 8192
_SHAPE_MAX_LENGTH = 160


def _shape(text: str) -> _Shape:
    """(whether it holds a BSN; what a remembered token may be in it: its words casefolded,
    then the keys of the phone numbers it may spell; those phone keys)."""
    shape = _SHAPES.get(text)
    if shape is None:
        shape = _id_shape(text)
        if shape is None:
            bsn, phones = _digits_shape(text)
            words = tuple(word.casefold() for word in _WORD.findall(text))
            shape = (bsn, words + phones, phones)
        if len(_SHAPES) >= _SHAPES_MAX:
            _SHAPES.clear()
        _SHAPES[text] = shape
    return shape


def _digits_shape(text: str) -> tuple[bool, tuple[int, ...]]:
    """Whether `_bsn` masks something in a text, and its `_phone_keys`: one regex search
    that finds nothing when no 9 digits stand together, as in most values."""
    match = _NUMBER_LIKE.search(text)
    if match is None:
        return _NO_DIGITS
    bsn, keys = False, []
    while match is not None:
        bsn = _run_shape(match, keys) or bsn
        match = _NUMBER_LIKE.search(text, match.end())
    return bsn, tuple(keys)


_NO_DIGITS: tuple[bool, tuple[int, ...]] = (False, ())


def _id_shape(text: str) -> _Shape | None:
    """`_shape` of an id (an ASCII letter, then ASCII letters, digits, "-" and "_"), most
    values of the hub's log lines, without `_WORD`: in such a text it finds one word, the
    text itself. A fresh UUID's shape took 43,700 instructions under cachegrind, 21,800 of
    them in `_WORD`; then 23,700. None for any other text."""
    if not (
        text.isascii() and text[:1].isalpha() and text.replace("-", "").replace("_", "").isalnum()
    ):
        return None
    bsn, phones = _digits_shape(text)
    return (bsn, (text.casefold(), *phones), phones)


def redact(text: str) -> str:
    """`text` with its personal data masked. Never raises: a bug here withholds the whole
    text rather than let it through unmasked (a log handler prints a failed line raw)."""
    try:
        return _redact(text)
    except Exception:  # noqa: BLE001 - the seatbelt must hold whatever it meets
        return f"[withheld: {len(text)} characters the redaction could not read]"


def _redact(text: str) -> str:
    tokens = REMEMBERED._tokens  # noqa: SLF001 - read-only checks on the hot path
    if len(text) <= _SHAPE_MAX_LENGTH:
        bsn, keys, phones = _shape(text)
        if not bsn and tokens.keys().isdisjoint(keys):
            return text
        phoned = bool(phones) and not tokens.keys().isdisjoint(phones)
        named = not tokens.keys().isdisjoint(keys[: len(keys) - len(phones)])
    else:
        bsn, phoned, named = True, REMEMBERED.phones > 0, bool(tokens)
    if phoned:
        text = _NUMBER_LIKE.sub(_number_or_phone, text)
    elif bsn:
        text = _NUMBER_LIKE.sub(_number, text)
    if named:
        text = _WORD.sub(_word, text)
    return text
