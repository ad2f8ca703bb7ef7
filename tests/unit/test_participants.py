from __future__ import annotations

from pathlib import Path

import pytest

from adapters.participants import load_participants, parse_participants
from schemas.errors import ConfigurationError
from schemas.participants import Participants
from services.settings import DEMO_PARTICIPANTS

GP = {
    "id": "praktijk-a",
    "name": "Praktijk A",
    "kind": "gp-practice",
    "identifiers": [{"system": "http://fhir.nl/fhir/NamingSystem/agb-z", "value": "01000001"}],
}
WELFARE = {
    "id": "welzijn-a",
    "name": "Welzijn A",
    "kind": "welfare",
    "identifiers": [{"system": "http://fhir.nl/fhir/NamingSystem/ura", "value": "11111111"}],
    "serves": ["0118"],
}


def test_demo_file_loads_with_every_kind(participants: Participants) -> None:
    kinds = {p.kind for p in participants}
    assert kinds == {"gp-practice", "welfare", "municipality"}
    assert participants.welfare_serving("0118").id == "welzijn-hoogeveen"
    assert participants.municipality_code("hoogeveen") == "0118"
    assert participants.municipality_code("1690") == "1690"
    assert participants.municipality("0118").id == "gemeente-hoogeveen"


def test_error_names_file_entry_and_field(tmp_path: Path) -> None:
    path = tmp_path / "p.toml"
    path.write_text(
        '[[participant]]\nid = "praktijk-a"\nname = "A"\nkind = "gp-practice"\n'
        'identifiers = [{ system = "http://fhir.nl/fhir/NamingSystem/agb-z", value = "01000001" }]\n'
        '[[participant]]\nid = "welzijn-b"\nname = "B"\nkind = "welfare"\n'
        'identifiers = [{ system = "x", value = "1" }]\nserves = ["118"]\n'
    )
    with pytest.raises(ConfigurationError) as info:
        load_participants(path)
    message = str(info.value)
    assert str(path) in message
    assert "participant[1] (id 'welzijn-b')" in message
    assert "'serves[0]'" in message
    assert "4-digit CBS" in message


def test_gp_practice_needs_agb() -> None:
    bad = {**GP, "identifiers": [{"system": "http://fhir.nl/fhir/NamingSystem/ura", "value": "1"}]}
    with pytest.raises(ConfigurationError, match=r"participant\[0\] \(id 'praktijk-a'\).*agb-z"):
        parse_participants({"participant": [bad]}, "f.toml")


def test_unknown_field_is_refused() -> None:
    with pytest.raises(ConfigurationError, match=r"field 'colour'"):
        parse_participants({"participant": [{**GP, "colour": "red"}]}, "f.toml")


@pytest.mark.parametrize("reserved", ["operator", "schakel-hub"])
def test_the_names_the_operator_and_the_hub_act_under_are_reserved(reserved: str) -> None:
    """A participant called `operator` would sign in to the console as the operator, and
    neither could be told apart in the audit trail."""
    with pytest.raises(ConfigurationError, match=f"'{reserved}' is reserved"):
        parse_participants({"participant": [{**WELFARE, "id": reserved}]}, "f.toml")


def test_duplicate_ids_and_identifiers_are_refused() -> None:
    with pytest.raises(ConfigurationError, match="also used by participant"):
        parse_participants({"participant": [GP, GP]}, "f.toml")
    other = {**WELFARE, "id": "welzijn-b", "serves": []}
    with pytest.raises(ConfigurationError, match="also belongs to 'welzijn-a'"):
        parse_participants({"participant": [WELFARE, other]}, "f.toml")


def test_one_token_for_two_participants_is_refused() -> None:
    """Its bearer would be taken for either of them: one of the two would see the other's
    registrations."""
    digest = "ab" * 32
    other = {**WELFARE, "id": "welzijn-b", "identifiers": [{"system": "u", "value": "2"}]}
    other["serves"] = ["0119"]
    with pytest.raises(
        ConfigurationError,
        match=r"participant\[1\] \(id 'welzijn-b'\): field 'api_token_sha256': the same token "
        r"as participant\[0\]",
    ):
        parse_participants(
            {
                "participant": [
                    {**GP, "api_token_sha256": digest},
                    {**other, "api_token_sha256": digest},
                ]
            },
            "f.toml",
        )
    parse_participants(
        {
            "participant": [
                {**GP, "api_token_sha256": digest},
                {**other, "api_token_sha256": "cd" * 32},
            ]
        },
        "f.toml",
    )


def test_ambiguous_routing_is_refused() -> None:
    other = {**WELFARE, "id": "welzijn-b", "identifiers": [{"system": "u", "value": "2"}]}
    with pytest.raises(ConfigurationError, match="0118 is served by welzijn-a, welzijn-b"):
        parse_participants({"participant": [WELFARE, other]}, "f.toml")


def test_bad_toml_and_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError, match="cannot read participants file"):
        load_participants(tmp_path / "missing.toml")
    broken = tmp_path / "broken.toml"
    broken.write_text("[[participant]\n")
    with pytest.raises(ConfigurationError, match="not valid TOML"):
        load_participants(broken)


def test_demo_constant_points_at_shipped_file() -> None:
    assert DEMO_PARTICIPANTS.is_file()
