"""Participants: every organisation the hub talks to (CONTRACT §1)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from schemas.identifiers import (
    AGB_SYSTEM,
    CBS_SYSTEM,
    CbsCode,
    ParticipantId,
    Sha256Hex,
    agb_valid,
)

ParticipantKind = Literal["gp-practice", "welfare", "municipality"]


RESERVED_IDS = frozenset({"operator", "schakel-hub"})
"""Names the operator and the hub act under (console sessions, the audit trail)."""


class OrgIdentifier(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    system: str = Field(min_length=1)
    value: str = Field(min_length=1)


class Participant(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    id: ParticipantId = Field(description="Slug used in topic names.")
    name: str = Field(min_length=1)
    kind: ParticipantKind
    identifiers: tuple[OrgIdentifier, ...] = Field(min_length=1)
    serves: tuple[CbsCode, ...] = Field(
        default=(), description="welfare: CBS codes of the municipalities it covers"
    )
    api_token_sha256: Sha256Hex | None = None
    contact_within_days: int = Field(
        default=14, ge=1, le=365, description="welfare: term for the first contact"
    )

    @field_validator("id")
    @classmethod
    def _not_reserved(cls, value: str) -> str:
        # The operator and the hub act under these names in sessions and the audit trail.
        if value in RESERVED_IDS:
            raise ValueError(f"{value!r} is reserved for the hub's own use")
        return value

    @model_validator(mode="after")
    def _kind_rules(self) -> Participant:
        systems = {i.system: i.value for i in self.identifiers}
        if self.kind == "gp-practice":
            agb = systems.get(AGB_SYSTEM)
            if agb is None or not agb_valid(agb):
                raise ValueError(
                    f"a gp-practice needs an 8-digit identifier with system {AGB_SYSTEM}"
                )
        if self.kind == "municipality":
            cbs = systems.get(CBS_SYSTEM)
            if cbs is None or not (len(cbs) == 4 and cbs.isdigit()):
                raise ValueError(
                    f"a municipality needs a 4-digit identifier with system {CBS_SYSTEM}"
                )
        if self.serves and self.kind != "welfare":
            raise ValueError("only a welfare participant serves municipalities")
        return self

    @property
    def cbs_code(self) -> str | None:
        for ident in self.identifiers:
            if ident.system == CBS_SYSTEM:
                return ident.value
        return None


class ParticipantsFile(BaseModel):
    """The TOML file as a whole: `[[participant]]` entries and a `[municipalities]` table."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    participant: tuple[Participant, ...] = Field(min_length=1)
    municipalities: dict[CbsCode, str] = Field(default_factory=dict)


class Participants:
    """Lookups over a validated participants file. Pure data, no I/O."""

    def __init__(self, file: ParticipantsFile, source: str = "<memory>") -> None:
        self.file = file
        self.source = source
        self.by_id: dict[str, Participant] = {p.id: p for p in file.participant}
        self._by_identifier: dict[tuple[str, str], Participant] = {
            (i.system, i.value): p for p in file.participant for i in p.identifiers
        }
        self._serving: dict[str, Participant] = {
            code: p for p in file.participant if p.kind == "welfare" for code in p.serves
        }
        self._municipality_by_name = {
            name.strip().casefold(): code for code, name in file.municipalities.items()
        }
        for p in file.participant:
            if p.kind == "municipality" and p.cbs_code:
                self._municipality_by_name.setdefault(p.name.strip().casefold(), p.cbs_code)

    def __iter__(self):  # type: ignore[no-untyped-def]
        return iter(self.file.participant)

    def get(self, participant_id: str) -> Participant | None:
        return self.by_id.get(participant_id)

    def by_identifier(self, system: str | None, value: str | None) -> Participant | None:
        if not system or not value:
            return None
        return self._by_identifier.get((system, value))

    def welfare_serving(self, cbs_code: str | None) -> Participant | None:
        return self._serving.get(cbs_code) if cbs_code else None

    def municipality_code(self, district: str | None) -> str | None:
        """A CBS code from `address.district`: the code itself, or a known municipality name."""
        if not district:
            return None
        text = district.strip()
        if len(text) == 4 and text.isdigit():
            return text
        return self._municipality_by_name.get(text.casefold())

    def municipality(self, cbs_code: str | None) -> Participant | None:
        if not cbs_code:
            return None
        for p in self.file.participant:
            if p.kind == "municipality" and p.cbs_code == cbs_code:
                return p
        return None

    def of_kind(self, kind: ParticipantKind) -> list[Participant]:
        return [p for p in self.file.participant if p.kind == kind]
