"""`consent-granted` / `consent-withdrawn`: a FHIR R4 Consent to the canonical `Consent`.

Anything the hub cannot read precisely is refused rather than read widely: a data entry
that does not name a referral by identifier would otherwise turn a consent for one
referral into a consent for all of them.
"""

from __future__ import annotations

from adapters.fhir.common import (
    Json,
    check_id,
    local_period_end,
    local_period_start,
    not_understood,
    parse_datetime,
    patient_bsn,
)
from adapters.fhir.validate import DEFAULT_MAX_BYTES, load_json, validate_resource
from schemas.consent import (
    CONTACT_CLASSES,
    CONTACT_SHORTHAND,
    DATA_CLASS_SYSTEM,
    DEFAULT_CLASSES,
    Consent,
    DataClass,
    ReferralRef,
)
from schemas.errors import InvalidConsentError, UnknownParticipantError
from schemas.participants import Participants

SCOPE_SYSTEM = "http://terminology.hl7.org/CodeSystem/consentscope"
PARTICIPATION_SYSTEM = "http://terminology.hl7.org/CodeSystem/v3-ParticipationType"
RECIPIENT_ROLE = "IRCP"
GRANTED = frozenset({"active"})
WITHDRAWN = frozenset({"inactive", "rejected"})


def _has_code(concept: object, system: str, code: str) -> bool:
    if not isinstance(concept, dict):
        return False
    return any(
        c.get("system") == system and c.get("code") == code for c in concept.get("coding") or ()
    )


def _recipients(provision: Json, consent: Json, participants: Participants) -> tuple[str, ...]:
    found: list[str] = []
    for index, actor in enumerate(provision.get("actor") or ()):
        if not _has_code(actor.get("role"), PARTICIPATION_SYSTEM, RECIPIENT_ROLE):
            continue
        ref = actor.get("reference") or {}
        participant = None
        ident = ref.get("identifier")
        if isinstance(ident, dict):
            participant = participants.by_identifier(ident.get("system"), ident.get("value"))
        elif isinstance(ref.get("reference"), str) and ref["reference"].startswith("#"):
            contained = next(
                (c for c in consent.get("contained") or () if c.get("id") == ref["reference"][1:]),
                {},
            )
            for i in contained.get("identifier") or ():
                participant = participant or participants.by_identifier(
                    i.get("system"), i.get("value")
                )
        if participant is None:
            raise UnknownParticipantError(
                f"Consent.provision.actor[{index}] names no known participant (by identifier)"
            )
        if participant.id not in found:
            found.append(participant.id)
    return tuple(found)


def _referrals(provision: Json) -> tuple[ReferralRef, ...]:
    refs: list[ReferralRef] = []
    for index, data in enumerate(provision.get("data") or ()):
        ident = (data.get("reference") or {}).get("identifier")
        if (
            data.get("meaning") != "instance"
            or not isinstance(ident, dict)
            or not ident.get("value")
        ):
            raise InvalidConsentError(
                f"Consent.provision.data[{index}] must have meaning instance and name the "
                "ServiceRequest by reference.identifier"
            )
        value = check_id(
            ident["value"], f"Consent.provision.data[{index}] identifier", InvalidConsentError
        )
        refs.append(ReferralRef(system=ident.get("system"), value=value))
    return tuple(refs)


def _classes(provision: Json) -> frozenset[DataClass]:
    """`provision.class`: codes of urn:schakel:consent-data. Absent: the referral and its
    contact data. A class the hub cannot read is refused, not ignored: ignoring it would
    widen the consent to the default."""
    codings = provision.get("class")
    if not codings:
        return DEFAULT_CLASSES
    found: set[DataClass] = set()
    for index, coding in enumerate(codings):
        code = coding.get("code")
        if coding.get("system") != DATA_CLASS_SYSTEM:
            raise InvalidConsentError(
                f"Consent.provision.class[{index}] must use system {DATA_CLASS_SYSTEM}"
            )
        if code == CONTACT_SHORTHAND:
            found.update(CONTACT_CLASSES)
        elif code in DataClass._value2member_map_:
            found.add(DataClass(code))
        else:
            raise InvalidConsentError(f"Consent.provision.class[{index}]: unknown data class code")
    return frozenset(found)


def consent_from_fhir(
    resource: Json,
    participants: Participants,
    *,
    expected_status: frozenset[str] = GRANTED,
    allow_test_bsn: bool = True,
) -> Consent:
    """A validated Consent to a `Consent`; raises `SchakelError` subclasses only."""
    try:
        return _consent(resource, participants, expected_status, allow_test_bsn)
    except (TypeError, AttributeError, ValueError, KeyError, IndexError, OverflowError) as exc:
        raise InvalidConsentError(f"unreadable consent ({type(exc).__name__})") from None


def _consent(
    resource: Json,
    participants: Participants,
    expected_status: frozenset[str],
    allow_test_bsn: bool,
) -> Consent:
    if resource.get("resourceType") != "Consent":
        raise InvalidConsentError(
            f"expected a Consent, got {str(resource.get('resourceType'))[:40]}"
        )
    consent_id = resource.get("id")
    if not consent_id:
        idents = resource.get("identifier") or []
        consent_id = idents[0].get("value") if idents else None
    if not consent_id:
        raise InvalidConsentError("Consent has neither id nor identifier")
    consent_id = check_id(consent_id, "Consent.id", InvalidConsentError)
    status = resource.get("status")
    if status not in expected_status:
        raise InvalidConsentError(
            f"Consent.status must be {' or '.join(sorted(expected_status))} here"
        )
    if not _has_code(resource.get("scope"), SCOPE_SYSTEM, "patient-privacy"):
        raise InvalidConsentError("Consent.scope must be patient-privacy")

    patient = resource.get("patient")
    bsn = None
    if isinstance(patient, dict) and isinstance(patient.get("identifier"), dict):
        bsn = patient_bsn(
            {"identifier": [patient["identifier"]]},
            "Consent.patient",
            allow_test_bsn=allow_test_bsn,
        )

    provision = resource.get("provision") or {}
    not_understood((resource, provision), "consent", InvalidConsentError)
    active = status == "active"
    if provision.get("provision"):
        raise InvalidConsentError(
            "nested Consent.provision.provision is not supported; send one Consent per rule"
        )
    objection = provision.get("type") == "deny"
    if objection:
        if (
            provision.get("actor")
            or provision.get("data")
            or provision.get("class")
            or provision.get("period")
        ):
            raise InvalidConsentError(
                "a deny provision must name no actor, data, class or period: it is the patient's "
                "objection to any exchange"
            )
        if bsn is None:
            raise InvalidConsentError("an objection must name the patient by BSN")
    elif active and provision.get("type") != "permit":
        raise InvalidConsentError("Consent.provision.type must be permit, or deny for an objection")
    recipients = () if objection else _recipients(provision, resource, participants)
    if active and not objection and not recipients:
        raise InvalidConsentError("Consent.provision.actor names no recipient with role IRCP")
    referrals = () if objection else _referrals(provision)
    if active and not objection and not referrals and bsn is None:
        raise InvalidConsentError("Consent names no referral and no patient BSN: it covers nobody")
    period = provision.get("period") or {}
    return Consent(
        consent_id=consent_id,
        status=status,
        kind="objection" if objection else "permit",
        patient_bsn=bsn,
        recipients=recipients,
        referrals=referrals,
        classes=DEFAULT_CLASSES if objection else _classes(provision),
        # A date without a time is a Dutch calendar day (GP systems mean local dates): the
        # period runs from 00:00 Europe/Amsterdam on its first day through its last.
        period_start=local_period_start(period.get("start")),
        period_end=local_period_end(period.get("end")),
        recorded_at=parse_datetime(resource.get("dateTime")),
    )


def consent_from_bytes(
    raw: bytes | None,
    participants: Participants,
    *,
    expected_status: frozenset[str] = GRANTED,
    max_bytes: int = DEFAULT_MAX_BYTES,
    allow_test_bsn: bool = True,
) -> Consent:
    data = load_json(raw, max_bytes)
    validate_resource(data)
    return consent_from_fhir(
        data, participants, expected_status=expected_status, allow_test_bsn=allow_test_bsn
    )
