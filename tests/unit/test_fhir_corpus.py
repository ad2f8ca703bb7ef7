"""Conformance against the official FHIR examples in shared/corpus/fhir (read in place)."""

from __future__ import annotations

from pathlib import Path

import pytest

from adapters.fhir.consent import consent_from_fhir
from adapters.fhir.referral import referral_from_fhir
from adapters.fhir.validate import load_json, validate_resource
from schemas.errors import InvalidFhirError, InvalidJsonError, SchakelError
from schemas.participants import Participants
from tests.conftest import CORPUS

VALID = sorted((CORPUS / "hl7-r4-examples").glob("*.json"))
INVALID = sorted((CORPUS / "fhir-test-cases").glob("*.json"))


def test_corpus_is_present() -> None:
    assert CORPUS.is_dir(), f"FHIR corpus not found at {CORPUS}; set SCHAKEL_FHIR_CORPUS"
    assert len(VALID) == 83
    assert len(INVALID) == 18


@pytest.mark.parametrize("path", VALID, ids=lambda p: p.name)
def test_valid_examples_pass_structural_validation(path: Path) -> None:
    data = load_json(path.read_bytes())
    assert validate_resource(data) == data["resourceType"]


@pytest.mark.parametrize("path", VALID, ids=lambda p: p.name)
def test_valid_examples_never_crash_the_parsers(path: Path, participants: Participants) -> None:
    """Official examples are not Schakel referrals: they may be refused, but only for a
    domain reason (never a structure error, never an unexpected exception)."""
    data = load_json(path.read_bytes())
    for parse in (
        lambda: referral_from_fhir(data, participants),
        lambda: consent_from_fhir(data, participants),
    ):
        try:
            parse()
        except SchakelError as exc:
            assert exc.reason not in ("invalid-json", "invalid-fhir"), exc.detail
            assert exc.detail


@pytest.mark.parametrize("path", INVALID, ids=lambda p: p.name)
def test_invalid_examples_are_rejected_with_a_reason(path: Path) -> None:
    with pytest.raises((InvalidJsonError, InvalidFhirError)) as info:
        validate_resource(load_json(path.read_bytes()))
    assert info.value.reason in ("invalid-json", "invalid-fhir")
    assert len(info.value.detail) > 10


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("empty-array.json", "must not be empty"),
        ("encounter-period.json", "per-1"),
        ("pat-security-bad-string.json", "embedded HTML"),
        ("pat-security-bad-xhtml.json", "txt-1"),
        ("bundle-duplicate-id.json", "absolute URL"),
        ("bad-markdown.json", "embedded HTML"),
        ("ai3.json", "unknownElement"),
        ("ai4.json", "birthDate"),
        ("json-no-quotes-1.json", "not valid JSON"),
    ],
)
def test_the_reason_matches_the_reference_validator(name: str, expected: str) -> None:
    """The six files fhir.resources alone accepts are caught by the hub's own rules."""
    with pytest.raises(SchakelError) as info:
        validate_resource(load_json((CORPUS / "fhir-test-cases" / name).read_bytes()))
    assert expected in info.value.detail
