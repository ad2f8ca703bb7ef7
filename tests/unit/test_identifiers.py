from __future__ import annotations

import uuid

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import BaseModel, ValidationError

from schemas.identifiers import Bsn, agb_valid, bsn_is_test_number, bsn_valid
from schemas.ids import NAMESPACE, message_id


def _elfproef(number: int) -> bool:
    """An independent statement of the rule: digits d1..d9, 9*d1 + ... + 2*d8 - d9 ≡ 0 (mod 11)."""
    digits = [int(c) for c in f"{number:09d}"]
    total = sum(d * w for d, w in zip(digits[:8], range(9, 1, -1), strict=True)) - digits[8]
    return number != 0 and total % 11 == 0


@given(st.integers(min_value=0, max_value=999_999_999))
def test_bsn_accepts_exactly_the_11_proef_numbers(number: int) -> None:
    assert bsn_valid(f"{number:09d}") == _elfproef(number)


@given(st.text(max_size=12))
def test_bsn_rejects_anything_but_nine_ascii_digits(text: str) -> None:
    if len(text) != 9 or not (text.isascii() and text.isdigit()):
        assert not bsn_valid(text)


def test_known_numbers() -> None:
    assert bsn_valid("123456782")
    assert bsn_valid("999900018")
    assert not bsn_valid("123456789")
    assert not bsn_valid("000000000")
    assert not bsn_valid("12345678")  # leading zero dropped: 8 digits
    assert not bsn_valid("１２３４５６７８２")  # full-width digits are not ASCII


def test_test_range() -> None:
    assert bsn_is_test_number("999900018")
    assert not bsn_is_test_number("123456782")


def test_bsn_repr_never_shows_the_number() -> None:
    class Holder(BaseModel):
        bsn: Bsn

    holder = Holder(bsn="123456782")
    assert "123456782" not in repr(holder)
    assert "123456782" not in str(holder)
    assert holder.bsn == "123456782"
    assert holder.model_dump()["bsn"] == "123456782"
    with pytest.raises(ValidationError) as info:
        Holder(bsn="123456789")
    assert "11-proef" in str(info.value)


def test_agb_is_eight_digits() -> None:
    assert agb_valid("01234567")
    assert not agb_valid("1234567")
    assert not agb_valid("0123456a")


@given(st.lists(st.text(max_size=40), min_size=1, max_size=5))
def test_message_ids_are_the_uuid5_of_their_parts(parts: list[str]) -> None:
    # ids already stored and published were made with uuid.uuid5: the same text, always
    assert message_id(*parts) == str(uuid.uuid5(NAMESPACE, "|".join(parts)))


def test_a_known_message_id_stays_the_same() -> None:
    assert (
        message_id("registration", "VERW-1", "welzijn-hoogeveen")
        == "f7689538-41aa-5a43-807c-7b918da41f70"
    )
