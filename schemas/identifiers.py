"""Dutch identifiers: BSN (11-proef), AGB-Z, CBS municipality code, participant id.

`Bsn` is a `str` whose repr is masked, so a BSN inside a model never shows up in a
traceback or a debug print by accident.
"""

from __future__ import annotations

import functools
import re
from typing import Annotated, Any

from pydantic import AfterValidator, GetCoreSchemaHandler, StringConstraints, WithJsonSchema
from pydantic_core import PydanticCustomError, core_schema

BSN_SYSTEM = "http://fhir.nl/fhir/NamingSystem/bsn"
AGB_SYSTEM = "http://fhir.nl/fhir/NamingSystem/agb-z"
URA_SYSTEM = "http://fhir.nl/fhir/NamingSystem/ura"
CBS_SYSTEM = "urn:schakel:cbs-gemeentecode"

_WEIGHTS = (9, 8, 7, 6, 5, 4, 3, 2, -1)
# The test range of iWmo 3.2: numbers in it pass the 11-proef but belong to nobody.
TEST_BSN_RANGE = (999_900_006, 999_999_990)


@functools.lru_cache(maxsize=32_768)  # each stored referral and consent is parsed again
def bsn_valid(value: str) -> bool:
    """The 11-proef (DOMAIN §4): 9 ASCII digits, weighted sum divisible by 11."""
    if len(value) != 9 or not (value.isascii() and value.isdigit()) or value == "000000000":
        return False
    return sum(int(c) * w for c, w in zip(value, _WEIGHTS, strict=True)) % 11 == 0


def bsn_is_test_number(value: str) -> bool:
    return value.isdigit() and TEST_BSN_RANGE[0] <= int(value) <= TEST_BSN_RANGE[1]


class Bsn(str):
    """A BSN that passed the 11-proef. Its repr never shows the number."""

    __slots__ = ()

    def __new__(cls, value: str) -> Bsn:
        if not isinstance(value, str) or not bsn_valid(value):
            raise ValueError("not a valid BSN (9 digits, 11-proef)")
        return super().__new__(cls, value)

    def __repr__(self) -> str:
        return "Bsn('*********')"

    @classmethod
    def __get_pydantic_core_schema__(
        cls, source: Any, handler: GetCoreSchemaHandler
    ) -> core_schema.CoreSchema:
        def validate(value: str) -> Bsn:
            if not bsn_valid(value):
                raise PydanticCustomError("bsn", "not a valid BSN (9 digits, 11-proef)")
            return cls(value)

        return core_schema.no_info_after_validator_function(
            validate,
            core_schema.str_schema(),
            serialization=core_schema.plain_serializer_function_ser_schema(str),
        )


_AGB = re.compile(r"^[0-9]{8}\Z")
_CBS = re.compile(r"^[0-9]{4}\Z")
_PARTICIPANT_ID = re.compile(r"^[a-z0-9-]{2,40}\Z")


def agb_valid(value: str) -> bool:
    """AGB-Z codes are 8 digits (DOMAIN §4)."""
    return bool(_AGB.match(value))


def _check(pattern: re.Pattern[str], what: str) -> AfterValidator:
    def check(value: str) -> str:
        if not pattern.match(value):
            raise ValueError(f"must be {what}")
        return value

    return AfterValidator(check)


def _exported(pattern: re.Pattern[str]) -> WithJsonSchema:
    """The same rule in the exported JSON Schema (ECMA-262: `$` is the end there)."""
    return WithJsonSchema({"type": "string", "pattern": pattern.pattern.replace("\\Z", "$")})


Agb = Annotated[str, _check(_AGB, "an 8-digit AGB code"), _exported(_AGB)]
CbsCode = Annotated[str, _check(_CBS, "a 4-digit CBS municipality code"), _exported(_CBS)]
ParticipantId = Annotated[
    str,
    _check(_PARTICIPANT_ID, "a slug of 2-40 characters a-z, 0-9, -"),
    _exported(_PARTICIPANT_ID),
]
Sha256Hex = Annotated[str, StringConstraints(pattern=r"^[0-9a-f]{64}$")]
