"""BSNs and patient names never reach a log line, whatever a developer logs by mistake."""

from __future__ import annotations

import io
import logging
import re

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from adapters.fhir.common import personal_strings
from adapters.logging import get_logger
from adapters.redaction import _BSN_LIKE, _WORD, _id_shape, redact, remember
from services.demo.samples import referral_bundle

BSN = "999900043"
GIVEN, FAMILY = "Wilhelmina", "Oosterhuis-Smit"


def _lines(buffer: io.StringIO) -> list[dict]:
    return [orjson.loads(line) for line in buffer.getvalue().splitlines() if line.strip()]


def test_bsn_is_masked_in_any_position(log_capture: io.StringIO) -> None:
    log = get_logger("test")
    log.info(f"patient {BSN} arrived", bsn=BSN, note=f"bsn={BSN}", nested={"deep": [BSN]})
    log.warning("formatted", value=f"{BSN[:4]}.{BSN[4:6]}.{BSN[6:]}")
    logging.getLogger("some.library").error("stdlib says %s", BSN)
    try:
        raise ValueError(f"bad bsn {BSN}")
    except ValueError:
        log.exception("crash")
    text = log_capture.getvalue()
    assert BSN not in text
    assert "9999.00.043" not in text
    assert text.count("[BSN]") >= 5
    assert len(_lines(log_capture)) == 4


def test_remembered_names_are_masked(log_capture: io.StringIO) -> None:
    remember(personal_strings(referral_bundle(given=GIVEN, family=FAMILY)))
    log = get_logger("test")
    log.info(f"hello {GIVEN} {FAMILY}", who=f"{FAMILY.lower()}")
    logging.getLogger("faststream").warning(
        "message body: %r", {"family": FAMILY, "given": [GIVEN]}
    )
    try:
        raise KeyError(GIVEN)
    except KeyError:
        logging.getLogger("aiokafka").exception("oops")
    text = log_capture.getvalue()
    assert GIVEN not in text
    assert FAMILY not in text and FAMILY.lower() not in text
    assert "[redacted]" in text


def test_personal_keys_are_masked_outright(log_capture: io.StringIO) -> None:
    get_logger("test").info(
        "client", name="Someone Unknown", address="Nowhere 1", email="x@example.org"
    )
    (line,) = _lines(log_capture)
    assert line["name"] == line["address"] == line["email"] == "[redacted]"


def test_ordinary_values_survive(log_capture: io.StringIO) -> None:
    get_logger("test").info("released", referral_id="VERW-2026-0001", offset=123456789, partition=3)
    (line,) = _lines(log_capture)
    assert line["referral_id"] == "VERW-2026-0001"
    assert line["offset"] == 123456789
    assert line["event"] == "released"


def test_redact_leaves_non_bsn_numbers() -> None:
    assert redact("offset 123456789 of 2026-12-01") == "offset 123456789 of 2026-12-01"
    assert redact("123456782") == "[BSN]"


def test_the_run_wide_privacy_check_finds_fixture_data() -> None:
    """The session-end scan of all log output (tests/conftest.py) must be able to fail."""
    from tests.conftest import _personal_data_in

    assert _personal_data_in('{"event":"released","offset":123456789}') == []
    assert _personal_data_in("patient 999900018 arrived") == ["999900018"]
    assert _personal_data_in("hello Anna de Vries-Bakker") == ["Vries-Bakker"]
    assert _personal_data_in("[BSN] and [redacted]") == []


def test_a_value_logged_before_its_name_was_remembered_is_masked_after(
    log_capture: io.StringIO,
) -> None:
    # redaction remembers what each short value holds; whether it is masked is decided anew
    log = get_logger("test")
    log.info("note", note="bel mevrouw Kwakkelstein terug")
    remember(["Kwakkelstein"])
    log.info("note", note="bel mevrouw Kwakkelstein terug")
    first, second = _lines(log_capture)
    assert first["note"] == "bel mevrouw Kwakkelstein terug"
    assert second["note"] == "bel mevrouw [redacted] terug"


def test_hub_and_library_lines_share_one_stream_in_order_at_the_configured_level(
    log_capture: io.StringIO,
) -> None:
    from adapters.logging import configure_logging

    configure_logging("INFO", "json", stream=log_capture)
    log = get_logger("schakel.test")
    log.debug("not at INFO")
    log.info("one", n=1)
    logging.getLogger("faststream").info("two")
    log.warning("three")
    configure_logging("DEBUG", "json", stream=log_capture)  # the fixture restores it
    log.debug("four")
    lines = _lines(log_capture)
    assert [(x["event"], x["level"], x["logger"]) for x in lines] == [
        ("one", "info", "schakel.test"),
        ("two", "info", "faststream"),
        ("three", "warning", "schakel.test"),
        ("four", "debug", "schakel.test"),
    ]
    assert all("timestamp" in x for x in lines)
    log_capture.close()
    log.info("a closed stream is not the caller's failure")


def _shape_by_the_regexes(text: str) -> tuple[bool, tuple[str | int, ...], tuple[int, ...]]:
    """(BSN masked, words and phone keys, phone keys), without `_id_shape`'s shortcuts."""
    from adapters.redaction import _bsn, _phone_keys

    return (
        _BSN_LIKE.sub(_bsn, text) != text,  # the whole text, not only its numbers' runs
        tuple(word.casefold() for word in _WORD.findall(text)) + _phone_keys(text),
        _phone_keys(text),
    )


@pytest.mark.parametrize(
    "text",
    [
        "VERW-c-0000599",
        "c5a7ce6d-9b81-5dc8-8058-4a35dd93bdb6",
        f"a{BSN}",
        f"ref-{BSN}-x",
        "x999-900-043",
        "x9999000430",  # ten digits: no BSN shape
        "x999-900-044",  # fails the 11-proef
        "VERW-2026-0001",
        "VERW-20260-0001",  # nine digits together: a phone number's shape
        "tel-06-1234-5678",
        "Ab_9",
        "welzijn-de-wolden",
        "Z",
    ],
)
def test_an_ids_shape_is_the_regexes(text: str) -> None:
    assert _id_shape(text) == _shape_by_the_regexes(text)


@settings(max_examples=600, deadline=None)
@given(
    st.one_of(
        st.from_regex(r"[A-Za-z][A-Za-z0-9_-]{0,40}", fullmatch=True),
        st.from_regex(r"[A-Za-z][0-9-]{0,14}[A-Za-z0-9]{0,3}", fullmatch=True),
        st.from_regex(r"[A-Za-z][A-Za-z0-9_.@+' -]{0,12}", fullmatch=True),  # near ids
        st.text(alphabet="aZ09_-.@+' ’éİß\u00a0", max_size=20),
    )
)
def test_every_shape_taken_without_the_regexes_is_theirs(text: str) -> None:
    """`_id_shape` answers only for ids, and then as the regexes do."""
    shape = _id_shape(text)
    if shape is not None:
        assert shape == _shape_by_the_regexes(text)
    else:
        assert not (text.isascii() and re.fullmatch(r"[A-Za-z][A-Za-z0-9_-]*", text))


def test_a_library_handler_added_after_the_setup_is_taken_away(log_capture: io.StringIO) -> None:
    """FastStream adds its own stderr handler when it is imported, which may be after the
    logging was set up; the hub then takes it away, so its lines are redacted too."""
    from adapters.logging import adopt_library_loggers

    library = logging.getLogger("faststream-like")
    escaped = io.StringIO()
    library.addHandler(logging.StreamHandler(escaped))
    library.propagate = False
    adopt_library_loggers()
    library.error("patient bsn 999900018")
    assert escaped.getvalue() == ""
    assert "999900018" not in log_capture.getvalue()
    assert "patient bsn" in log_capture.getvalue()


# --- digits: BSNs in any grouping, remembered phone numbers in any spelling ------------
# Synthetic numbers only: the first number from a start that passes the 11-proef.


def _passing_11_proef(start: int) -> str:
    from schemas.identifiers import bsn_valid

    return next(str(n) for n in range(start, start + 100) if bsn_valid(str(n)))


TEST_BSN = _passing_11_proef(999_912_345)  # iWmo test range: belongs to nobody
PHONE = "0612345678"  # remembered in the tests below, as written there
PHONE_NSN = _passing_11_proef(687_654_321)  # never remembered: "06" + these 9 digits


def _groupings(digits: str) -> list[list[str]]:
    """Every way to cut the digits into groups (2^8 for 9 digits)."""
    cuts = len(digits) - 1
    result = []
    for mask in range(2**cuts):
        groups, start = [], 0
        for i in range(cuts):
            if mask >> i & 1:
                groups.append(digits[start : i + 1])
                start = i + 1
        result.append([*groups, digits[start:]])
    return result


def test_a_bsn_in_any_grouping_with_single_separators_is_masked() -> None:
    """Before: only 123456782, 1234.56.782 (". " or none) and 123 456 782 (" .-")."""
    missed = []
    for groups in _groupings(TEST_BSN):
        for separators in (" ", ".", "-", " .-"):  # the last mixes them
            written = "".join(
                group + (separators[i % len(separators)] if i < len(groups) - 1 else "")
                for i, group in enumerate(groups)
            )
            if redact(f"bsn {written} ontvangen") != "bsn [BSN] ontvangen":
                missed.append(written)
    assert missed == []


@pytest.mark.parametrize(
    "written", ["12 34 56 782", "1234-56-782", "123.45.6782", "12-345-67-82", "12345 6782"]
)
def test_the_groupings_from_the_review_are_masked(written: str) -> None:
    assert redact(f"patient {written}, opnieuw") == "patient [BSN], opnieuw"
    assert redact(written.replace("2", "3")) == written.replace("2", "3")  # fails the 11-proef


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        # a further group with a separator the BSN uses itself makes it a longer number
        ("123 456 782 1", "123 456 782 1"),
        ("1 123 456 782", "1 123 456 782"),
        ("12-34-56-782-0", "12-34-56-782-0"),
        ("01234.56.782", "01234.56.782"),
        ("0123456782", "0123456782"),  # ten digits in one run
        ("1234567820", "1234567820"),
        # another number beside it with another separator: a date and a BSN
        ("2026-03-01 1234.56.782", "2026-03-01 [BSN]"),
        ("1234.56.782 2026-03-01", "[BSN] 2026-03-01"),
        ("123-456-782 1", "[BSN] 1"),
        # nine digits in one run are a BSN wherever they stand, as before
        ("bsn 123456782 2", "bsn [BSN] 2"),
        ("2026-03-01 123456782", "2026-03-01 [BSN]"),
        ("ref-123456782-x", "ref-[BSN]-x"),
        ("ref-1234-56-782-x", "ref-[BSN]-x"),
        ("x999900043", "x[BSN]"),
        # groups touching a letter are part of an id (random UUIDs, the digits passing)
        ("2c44a016-7132-42e5-8dc4-df7d386d2eed", "2c44a016-7132-42e5-8dc4-df7d386d2eed"),
        ("31162427-3bfd-4d33-8d00-38ec42650644", "31162427-3bfd-4d33-8d00-38ec42650644"),
        ("x999-900-043", "x999-900-043"),  # the price (masked before)
        ("12:30:45 123 456 782", "12:30:45 123 456 782"),  # the price: one longer number
    ],
)
def test_a_bsn_is_never_masked_out_of_a_longer_number_or_an_id(text: str, expected: str) -> None:
    assert redact(text) == expected


@pytest.mark.parametrize(
    "template",
    [
        "06 {a} {b}",  # ten digits, as phone numbers are
        "06-{a} {b}",
        "0{n}",
        "+31 6 {a} {b}",  # the nine digits after +31 pass the 11-proef
        "+31 {n3} {n6} {n9}",
        "+31 (0)6-{a}-{b}",
        "0031 6 {a} {b}",
        "+31 6-{a}-{b}",
        "NL02 ABNA 06{a3} {a4}{b1} {b4}",  # an IBAN holding the same digits
    ],
)
def test_a_phone_number_or_iban_is_not_partly_masked_as_a_bsn(template: str) -> None:
    n = PHONE_NSN
    text = template.format(
        n=n,
        a=n[1:5],
        b=n[5:],
        n3=n[:3],
        n6=n[3:6],
        n9=n[6:],
        a3=n[1:3],
        a4=n[3:5],
        b1=n[5:7],
        b4=n[7:],
    )
    assert redact(f"bel {text} terug") == f"bel {text} terug"


REMEMBERED_AS = ["06{d}", "06-{d}", "+31 6 {d}"]
WRITTEN_AS = [
    "06 {a} {b}",
    "06-{a} {b}",
    "(06) {d}",
    "+31 6 {a} {b}",
    "+316{d}",
    "0031 6 {d}",
    "+31 (0)6 {d}",
    "+31(0)6{d}",
    "06.{d2}.{d4}.{d6}.{d8}",
    "06/{d}",
    "06 - {a3} {a6} {b2}",
    "06\u00a0{a}\u00a0{b}",
]


@pytest.mark.parametrize("remembered", range(len(REMEMBERED_AS)), ids=REMEMBERED_AS)
@pytest.mark.parametrize("written", range(len(WRITTEN_AS)), ids=WRITTEN_AS)
def test_a_remembered_phone_number_is_masked_however_it_is_written(
    remembered: int, written: int
) -> None:
    d = str(50_000_000 + 100 * remembered + written)  # a number of its own for each case
    parts = {"d": d, "a": d[:4], "b": d[4:], "a3": d[:3], "a6": d[3:6], "b2": d[6:]}
    parts |= {"d2": d[:2], "d4": d[2:4], "d6": d[4:6], "d8": d[6:]}
    remember([REMEMBERED_AS[remembered].format(**parts)])
    text = WRITTEN_AS[written].format(**parts)
    assert redact(f"bel {text} terug") == "bel [redacted] terug"
    assert redact(f"bel {text}") == "bel [redacted]"  # its own value, or the end of one


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("bel 06 1234 5678 om 14 30", "bel [redacted] om 14 30"),
        ("2 x 06 1234 5678 2026-03-01", "2 x [redacted] 2026-03-01"),
        ("nummer (0612345678)", "nummer ([redacted])"),
        ("nummer (+31 6 1234 5678).", "nummer ([redacted])."),
        ("tel 06 1234 5679", "tel 06 1234 5679"),  # another number
        ("tel 16 1234 5678", "tel 16 1234 5678"),
        ("offset 10612345678", "offset 10612345678"),  # digits are masked in whole runs
        ("offset 612345678", "offset 612345678"),  # without a 0 or + before: no phone number
    ],
)
def test_a_phone_number_is_masked_and_the_numbers_beside_it_are_kept(
    text: str, expected: str
) -> None:
    remember([PHONE])
    assert redact(text) == expected


def test_a_phone_number_logged_before_it_was_remembered_is_masked_after() -> None:
    # the cached shape of a short value holds what it may spell, not whether it is masked
    line = "terugbelverzoek 06 2233 4455"
    assert redact(line) == line
    remember(["06-22334455"])
    assert redact(line) == "terugbelverzoek [redacted]"


def test_a_long_line_with_a_phone_number_is_masked() -> None:
    remember(["+31 6 33445566"])
    text = "x" * 200 + " bel 06 3344 5566 of (06) 33445566 " + "y" * 20
    assert redact(text) == "x" * 200 + " bel [redacted] of [redacted] " + "y" * 20


@settings(max_examples=400, deadline=None)
@given(
    st.lists(
        st.one_of(
            st.sampled_from(["06", "1234", "5678", "+31", "(0)", "123", "456", "782", "56"]),
            st.sampled_from([TEST_BSN[:4], TEST_BSN[4:6], TEST_BSN[6:], TEST_BSN]),
            st.from_regex(r"[0-9]{1,4}", fullmatch=True),
        ),
        max_size=10,
    ),
    st.lists(st.sampled_from([" ", ".", "-", "/", "  ", ", ", "x"]), min_size=10, max_size=10),
)
def test_digits_are_masked_in_whole_runs_only(pieces: list[str], joints: list[str]) -> None:
    """Whatever numbers stand together, redaction takes whole runs of digits or none."""
    from collections import Counter

    remember([PHONE])
    text = "".join(piece + joint for piece, joint in zip(pieces, joints, strict=False))
    runs = Counter(re.findall(r"[0-9]+", text))
    assert Counter(re.findall(r"[0-9]+", redact(text))) <= runs


@settings(max_examples=400, deadline=None)
@given(st.text(alphabet="0123456789 .-+()/a_\u00a0", max_size=40))
def test_the_shape_of_any_text_is_the_regexes(text: str) -> None:
    """The shape of a value with no 9 digits together is taken without looking further."""
    from adapters.redaction import _shape

    assert _shape(text) == _shape_by_the_regexes(text)


@pytest.mark.parametrize(
    "text",
    ["bel 0612345678 / 0 12 terug", "x" * 170 + " teller 0 123456789", "0 0 0 0612345678 0"],
)
def test_a_lone_zero_beside_a_phone_number_is_read(text: str) -> None:
    """A digit group of just "0" (found in a final read: an IndexError, and the log line
    went out unmasked through the handler's error path)."""
    remember(["06-12345678"])
    assert "0612345678" not in redact(text)


def test_the_redaction_withholds_a_line_it_cannot_read(monkeypatch: pytest.MonkeyPatch) -> None:
    import adapters.redaction as redaction

    def broken(text: str) -> str:
        raise IndexError("a bug")

    monkeypatch.setattr(redaction, "_redact", broken)
    assert redaction.redact("bel 0612345678") == (
        "[withheld: 14 characters the redaction could not read]"
    )
