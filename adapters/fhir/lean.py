"""The fast path of `validate_resource`: lean pydantic models of the shapes the hub receives
every day (the referral Bundle and the Consent), never more permissive than fhir.resources.

Every model here mirrors one R4B model (`__full__`) and may only be narrower than it:

- the same element names (JSON keys), a subset of them; `extra="forbid"`, so any other key,
  `_element` primitive extensions and `fhir_comments` included, is a rejection;
- every element the R4B model requires is required here too;
- primitives carry fhir.resources' own type metadata (the same regexes, lengths and
  bounds, checked by the same regex engine) under `strict=True`: a JSON string for strings,
  a JSON bool, a JSON integer; dates and times are checked by fhir.resources' own type
  (`TypeAdapter`) after the strict string check;
- no JSON null anywhere, no empty array, no empty string (also where fhir.resources
  allows one, as in `uri`);
- a choice element (`value[x]`, `deceased[x]`, ...) has at most one of its types;
- nested resources (`Bundle.entry.resource`, `contained`) only of the types below, chosen
  by their `resourceType`.

So "lean accepts" implies "fhir.resources accepts". Whatever the lean models reject or do
not cover goes to fhir.resources, so the hub's verdicts and error texts are what they were
without the fast path. tests/unit/test_lean_validation.py checks the mirror element by
element against the R4B models and compares both paths on the corpus, the hub's own inputs,
edge values and mutated inputs.
"""

from __future__ import annotations

from typing import Annotated, Any, ClassVar, Literal, TypeVar, Union

from annotated_types import MinLen
from fhir.resources.R4B import fhirtypes as ft
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, TypeAdapter, model_validator

T = TypeVar("T")

# An element left out of the JSON. The annotations do not admit None, so a JSON null is
# refused; the default itself is never validated.
ABSENT: Any = None


def _full_check(full_type: Any) -> AfterValidator:
    """fhir.resources' own check of a primitive it checks in Python (date, dateTime, instant,
    url), run on a value already known to be a JSON string (the R4B type alone would also
    take numbers and date objects)."""
    adapter: TypeAdapter[Any] = TypeAdapter(full_type)

    def check(value: str) -> str:
        adapter.validate_python(value)
        return value

    check.full_type = full_type  # type: ignore[attr-defined]  # read by the mirror test
    return AfterValidator(check)


# Primitives: fhir.resources' types (fhir_core metadata), made strict by the model config,
# and not empty.
String = ft.StringType
Code = ft.CodeType
Id = ft.IdType
Uri = Annotated[ft.UriType, MinLen(1)]
Canonical = Annotated[ft.CanonicalType, MinLen(1)]
Markdown = Annotated[ft.MarkdownType, MinLen(1)]
Xhtml = Annotated[ft.XhtmlType, MinLen(1)]
Boolean = ft.BooleanType
Integer = ft.IntegerType
PositiveInt = ft.PositiveIntType
Date = Annotated[str, MinLen(1), _full_check(ft.DateType)]
DateTime = Annotated[str, MinLen(1), _full_check(ft.DateTimeType)]
Instant = Annotated[str, MinLen(1), _full_check(ft.InstantType)]
Url = Annotated[str, MinLen(1), _full_check(ft.UrlType)]
UnsignedInt = ft.UnsignedIntType

# A FHIR array: never empty, never null, no null items.
Array = Annotated[list[T], MinLen(1)]


class Lean(BaseModel):
    """A lean model of the R4B model named by `__full__` (module.Class under
    fhir.resources.R4B)."""

    model_config = ConfigDict(extra="forbid", strict=True)
    __full__: ClassVar[str]
    # Groups of a choice element's types present in this model: at most one of each.
    __choices__: ClassVar[tuple[tuple[str, ...], ...]] = ()


class LeanWithChoices(Lean):
    @model_validator(mode="after")
    def _one_type_per_choice(self) -> LeanWithChoices:
        for group in self.__choices__:
            if sum(getattr(self, name) is not None for name in group) > 1:
                raise ValueError(f"more than one of {', '.join(group)}")
        return self


# --- data types --------------------------------------------------------------------------


class Element(Lean):
    id: String = ABSENT
    extension: Array[Extension] = ABSENT


class Extension(Element, LeanWithChoices):
    __full__ = "extension.Extension"
    __choices__ = (
        (
            "valueBoolean",
            "valueCode",
            "valueCodeableConcept",
            "valueCoding",
            "valueDate",
            "valueDateTime",
            "valueIdentifier",
            "valueInteger",
            "valuePeriod",
            "valueReference",
            "valueString",
            "valueUri",
        ),
    )
    url: Uri
    valueBoolean: Boolean = ABSENT
    valueCode: Code = ABSENT
    valueCodeableConcept: CodeableConcept = ABSENT
    valueCoding: Coding = ABSENT
    valueDate: Date = ABSENT
    valueDateTime: DateTime = ABSENT
    valueIdentifier: Identifier = ABSENT
    valueInteger: Integer = ABSENT
    valuePeriod: Period = ABSENT
    valueReference: Reference = ABSENT
    valueString: String = ABSENT
    valueUri: Uri = ABSENT


class Coding(Element):
    __full__ = "coding.Coding"
    system: Uri = ABSENT
    version: String = ABSENT
    code: Code = ABSENT
    display: String = ABSENT
    userSelected: Boolean = ABSENT


class CodeableConcept(Element):
    __full__ = "codeableconcept.CodeableConcept"
    coding: Array[Coding] = ABSENT
    text: String = ABSENT


class Period(Element):
    __full__ = "period.Period"
    start: DateTime = ABSENT
    end: DateTime = ABSENT


class Identifier(Element):
    __full__ = "identifier.Identifier"
    use: Code = ABSENT
    type: CodeableConcept = ABSENT
    system: Uri = ABSENT
    value: String = ABSENT
    period: Period = ABSENT
    assigner: Reference = ABSENT


class Reference(Element):
    __full__ = "reference.Reference"
    reference: String = ABSENT
    type: Uri = ABSENT
    identifier: Identifier = ABSENT
    display: String = ABSENT


class HumanName(Element):
    __full__ = "humanname.HumanName"
    use: Code = ABSENT
    text: String = ABSENT
    family: String = ABSENT
    given: Array[String] = ABSENT
    prefix: Array[String] = ABSENT
    suffix: Array[String] = ABSENT
    period: Period = ABSENT


class Address(Element):
    __full__ = "address.Address"
    use: Code = ABSENT
    type: Code = ABSENT
    text: String = ABSENT
    line: Array[String] = ABSENT
    city: String = ABSENT
    district: String = ABSENT
    state: String = ABSENT
    postalCode: String = ABSENT
    country: String = ABSENT
    period: Period = ABSENT


class ContactPoint(Element):
    __full__ = "contactpoint.ContactPoint"
    system: Code = ABSENT
    value: String = ABSENT
    use: Code = ABSENT
    rank: PositiveInt = ABSENT
    period: Period = ABSENT


class Annotation(Element, LeanWithChoices):
    __full__ = "annotation.Annotation"
    __choices__ = (("authorReference", "authorString"),)
    authorReference: Reference = ABSENT
    authorString: String = ABSENT
    time: DateTime = ABSENT
    text: Markdown


class Narrative(Element):
    __full__ = "narrative.Narrative"
    status: Code
    div: Xhtml


class Attachment(Element):
    __full__ = "attachment.Attachment"
    contentType: Code = ABSENT
    language: Code = ABSENT
    url: Url = ABSENT
    size: UnsignedInt = ABSENT
    title: String = ABSENT
    creation: DateTime = ABSENT


class Meta(Element):
    __full__ = "meta.Meta"
    versionId: Id = ABSENT
    lastUpdated: Instant = ABSENT
    source: Uri = ABSENT
    profile: Array[Canonical] = ABSENT
    security: Array[Coding] = ABSENT
    tag: Array[Coding] = ABSENT


# --- resources ---------------------------------------------------------------------------


class DomainResource(Lean):
    id: Id = ABSENT
    meta: Meta = ABSENT
    language: Code = ABSENT
    text: Narrative = ABSENT
    contained: Array[LeanResource] = ABSENT
    extension: Array[Extension] = ABSENT


class Patient(DomainResource, LeanWithChoices):
    __full__ = "patient.Patient"
    __choices__ = (("deceasedBoolean", "deceasedDateTime"),)
    resourceType: Literal["Patient"]
    identifier: Array[Identifier] = ABSENT
    active: Boolean = ABSENT
    name: Array[HumanName] = ABSENT
    telecom: Array[ContactPoint] = ABSENT
    gender: Code = ABSENT
    birthDate: Date = ABSENT
    deceasedBoolean: Boolean = ABSENT
    deceasedDateTime: DateTime = ABSENT
    address: Array[Address] = ABSENT
    maritalStatus: CodeableConcept = ABSENT
    contact: Array[PatientContact] = ABSENT
    communication: Array[PatientCommunication] = ABSENT
    generalPractitioner: Array[Reference] = ABSENT
    managingOrganization: Reference = ABSENT


class PatientContact(Element):
    __full__ = "patient.PatientContact"
    relationship: Array[CodeableConcept] = ABSENT
    name: HumanName = ABSENT
    telecom: Array[ContactPoint] = ABSENT
    address: Address = ABSENT
    gender: Code = ABSENT
    organization: Reference = ABSENT
    period: Period = ABSENT


class PatientCommunication(Element):
    __full__ = "patient.PatientCommunication"
    language: CodeableConcept
    preferred: Boolean = ABSENT


class Practitioner(DomainResource):
    __full__ = "practitioner.Practitioner"
    resourceType: Literal["Practitioner"]
    identifier: Array[Identifier] = ABSENT
    active: Boolean = ABSENT
    name: Array[HumanName] = ABSENT
    telecom: Array[ContactPoint] = ABSENT
    address: Array[Address] = ABSENT
    gender: Code = ABSENT
    birthDate: Date = ABSENT
    qualification: Array[PractitionerQualification] = ABSENT
    communication: Array[CodeableConcept] = ABSENT


class PractitionerQualification(Element):
    __full__ = "practitioner.PractitionerQualification"
    identifier: Array[Identifier] = ABSENT
    code: CodeableConcept
    period: Period = ABSENT
    issuer: Reference = ABSENT


class PractitionerRole(DomainResource):
    __full__ = "practitionerrole.PractitionerRole"
    resourceType: Literal["PractitionerRole"]
    identifier: Array[Identifier] = ABSENT
    active: Boolean = ABSENT
    period: Period = ABSENT
    practitioner: Reference = ABSENT
    organization: Reference = ABSENT
    code: Array[CodeableConcept] = ABSENT
    specialty: Array[CodeableConcept] = ABSENT
    location: Array[Reference] = ABSENT
    healthcareService: Array[Reference] = ABSENT
    telecom: Array[ContactPoint] = ABSENT
    endpoint: Array[Reference] = ABSENT


class Organization(DomainResource):
    __full__ = "organization.Organization"
    resourceType: Literal["Organization"]
    identifier: Array[Identifier] = ABSENT
    active: Boolean = ABSENT
    type: Array[CodeableConcept] = ABSENT
    name: String = ABSENT
    alias: Array[String] = ABSENT
    telecom: Array[ContactPoint] = ABSENT
    address: Array[Address] = ABSENT
    partOf: Reference = ABSENT
    contact: Array[OrganizationContact] = ABSENT
    endpoint: Array[Reference] = ABSENT


class OrganizationContact(Element):
    __full__ = "organization.OrganizationContact"
    purpose: CodeableConcept = ABSENT
    name: HumanName = ABSENT
    telecom: Array[ContactPoint] = ABSENT
    address: Address = ABSENT


class ServiceRequest(DomainResource, LeanWithChoices):
    __full__ = "servicerequest.ServiceRequest"
    __choices__ = (("occurrenceDateTime", "occurrencePeriod"),)
    resourceType: Literal["ServiceRequest"]
    identifier: Array[Identifier] = ABSENT
    basedOn: Array[Reference] = ABSENT
    replaces: Array[Reference] = ABSENT
    requisition: Identifier = ABSENT
    status: Code
    intent: Code
    category: Array[CodeableConcept] = ABSENT
    priority: Code = ABSENT
    doNotPerform: Boolean = ABSENT
    code: CodeableConcept = ABSENT
    orderDetail: Array[CodeableConcept] = ABSENT
    subject: Reference
    encounter: Reference = ABSENT
    occurrenceDateTime: DateTime = ABSENT
    occurrencePeriod: Period = ABSENT
    authoredOn: DateTime = ABSENT
    requester: Reference = ABSENT
    performerType: CodeableConcept = ABSENT
    performer: Array[Reference] = ABSENT
    reasonCode: Array[CodeableConcept] = ABSENT
    reasonReference: Array[Reference] = ABSENT
    supportingInfo: Array[Reference] = ABSENT
    note: Array[Annotation] = ABSENT
    patientInstruction: String = ABSENT


class Consent(DomainResource, LeanWithChoices):
    __full__ = "consent.Consent"
    __choices__ = (("sourceAttachment", "sourceReference"),)
    resourceType: Literal["Consent"]
    identifier: Array[Identifier] = ABSENT
    status: Code
    scope: CodeableConcept
    category: Array[CodeableConcept]
    patient: Reference = ABSENT
    dateTime: DateTime = ABSENT
    performer: Array[Reference] = ABSENT
    organization: Array[Reference] = ABSENT
    sourceAttachment: Attachment = ABSENT
    sourceReference: Reference = ABSENT
    policy: Array[ConsentPolicy] = ABSENT
    policyRule: CodeableConcept = ABSENT
    verification: Array[ConsentVerification] = ABSENT
    provision: ConsentProvision = ABSENT


class ConsentPolicy(Element):
    __full__ = "consent.ConsentPolicy"
    authority: Uri = ABSENT
    uri: Uri = ABSENT


class ConsentVerification(Element):
    __full__ = "consent.ConsentVerification"
    verified: Boolean
    verifiedWith: Reference = ABSENT
    verificationDate: DateTime = ABSENT


class ConsentProvision(Element):
    __full__ = "consent.ConsentProvision"
    type: Code = ABSENT
    period: Period = ABSENT
    actor: Array[ConsentProvisionActor] = ABSENT
    action: Array[CodeableConcept] = ABSENT
    securityLabel: Array[Coding] = ABSENT
    purpose: Array[Coding] = ABSENT
    class_: Array[Coding] = Field(default=ABSENT, alias="class")
    code: Array[CodeableConcept] = ABSENT
    dataPeriod: Period = ABSENT
    data: Array[ConsentProvisionData] = ABSENT
    provision: Array[ConsentProvision] = ABSENT


class ConsentProvisionActor(Element):
    __full__ = "consent.ConsentProvisionActor"
    role: CodeableConcept
    reference: Reference


class ConsentProvisionData(Element):
    __full__ = "consent.ConsentProvisionData"
    meaning: Code
    reference: Reference


# --- the Bundle ----------------------------------------------------------------------------


class Bundle(Lean):
    __full__ = "bundle.Bundle"
    resourceType: Literal["Bundle"]
    id: Id = ABSENT
    meta: Meta = ABSENT
    language: Code = ABSENT
    identifier: Identifier = ABSENT
    type: Code
    timestamp: Instant = ABSENT
    link: Array[BundleLink] = ABSENT
    entry: Array[BundleEntry] = ABSENT


class BundleLink(Element):
    __full__ = "bundle.BundleLink"
    relation: String
    url: Uri


class BundleEntry(Element):
    __full__ = "bundle.BundleEntry"
    link: Array[BundleLink] = ABSENT
    fullUrl: Uri = ABSENT
    resource: LeanResource = ABSENT
    request: BundleEntryRequest = ABSENT


class BundleEntryRequest(Element):
    __full__ = "bundle.BundleEntryRequest"
    method: Code
    url: Uri
    ifNoneMatch: String = ABSENT
    ifModifiedSince: Instant = ABSENT
    ifMatch: String = ABSENT
    ifNoneExist: String = ABSENT


# The resources a Bundle entry or `contained` may hold on the fast path, by resourceType.
RESOURCES: tuple[type[Lean], ...] = (
    Patient,
    Practitioner,
    PractitionerRole,
    Organization,
    ServiceRequest,
    Consent,
)
# (`Union[...]` of the tuple: `X | Y` cannot be built from one.)
LeanResource = Annotated[Union[RESOURCES], Field(discriminator="resourceType")]  # noqa: UP007

MODELS: tuple[type[Lean], ...] = tuple(
    model
    for model in list(globals().values())
    if isinstance(model, type) and issubclass(model, Lean) and "__full__" in model.__dict__
)
for _model in MODELS:
    _model.model_rebuild()

# The top-level resource types the fast path covers.
TOP_LEVEL: dict[str, type[Lean]] = {"Bundle": Bundle, "Consent": Consent}


def accepts(data: dict[str, Any]) -> bool:
    """True when the lean models accept `data`: then fhir.resources' R4B models accept it
    too. False means "ask fhir.resources", never "invalid". Only for a resource nested no
    deeper than `validate.MAX_DEPTH` (`validate_resource` refuses deeper ones before it
    asks): the lean models have no such limit, and fhir.resources runs out of stack on a
    deep enough one (an extension nested 200 levels in extensions)."""
    resource_type = data.get("resourceType")
    model = TOP_LEVEL.get(resource_type) if isinstance(resource_type, str) else None
    if model is None:
        return False
    try:
        model.model_validate(data)
    except Exception:  # noqa: BLE001 - any failure of the fast path means: take the full one
        return False
    return True
