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


def _shape_by_the_regexes(text: str) -> tuple[bool, tuple[str, ...]]:
    return (
        _BSN_LIKE.search(text) is not None,
        tuple(word.casefold() for word in _WORD.findall(text)),
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
