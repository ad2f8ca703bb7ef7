"""The AsyncAPI 3.0 document of every topic (CONTRACT §2), generated from the FastStream
apps and exported to `schemas/generated/asyncapi.json` by `python -m services.export`.

The inbound channels come from the services' own routers (intake, consent, feedback), as
the hub runs them. The hub does not publish through FastStream publishers (handlers write
to the outbox, the relay sends), so its outbound messages are declared here as FastStream
publishers on a router that is only ever used for this document. FastStream then gives one
channel per publisher; they are merged into one channel per topic, and every message gets
its CloudEvents name, content type, headers and payload schema (the handlers read raw
records, so FastStream cannot know the inbound payloads).
"""

from __future__ import annotations

import copy
import json
import re
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote, unquote

from faststream.kafka import KafkaBroker, KafkaRouter
from faststream.specification import AsyncAPI
from pydantic import BaseModel

from adapters.broker.consumer import AssignmentTracker, ConsumerTuning
from adapters.participants import load_participants
from adapters.storage.store import Store
from schemas import topics as names
from schemas.errors import DEAD_LETTER_REASONS
from schemas.feedback import WelfareFeedback
from schemas.notices import ContactReminder, ReferralRevokedNotice
from schemas.topics import Header, Topics, ce_type
from schemas.welfare import WelfareIntake
from services.consent.app import create_router as consent_router
from services.feedback.app import create_router as feedback_router
from services.intake.app import create_router as intake_router
from services.metrics import subscriptions
from services.runtime import Hub
from services.settings import DEMO_PARTICIPANTS, HubSettings

PARTICIPANT = "{participant_id}"
CBS_CODE = "{cbs_code}"
SCHEMA_REF = "#/components/schemas/"


def _fhir(resource: str, what: str) -> dict[str, Any]:
    return {
        "title": f"FHIR R4 {resource}",
        "description": f"{what} FHIR R4 JSON (validated with the R4B models and the "
        "reference validator's extra rules).",
        "type": "object",
        "required": ["resourceType"],
        "properties": {"resourceType": {"const": resource}},
        "additionalProperties": True,
        "externalDocs": {"url": f"https://hl7.org/fhir/R4/{resource.lower()}.html"},
    }


IWMO_XML = {
    "title": "iWmo-style registration XML",
    "description": "Validated against schemas/xsd/schakel-wmo-registratie.xsd before it is "
    "sent; carries the BSN, the GP as Verwijzer type 02 (schemas/xsd/README.md).",
    "type": "string",
    "contentMediaType": "application/xml",
}
ORIGINAL_BYTES = {
    "title": "the original message",
    "description": "The dead-lettered record's bytes, unchanged (possibly not JSON, possibly "
    "null).",
}


@dataclass(frozen=True)
class Message:
    key: str
    address: str
    event: str
    summary: str
    content_type: str
    payload: type[BaseModel] | dict[str, Any]
    headers: str = "CloudEventsHeaders"
    key_text: str = "the referral id (a Consent naming no single referral: its Consent id)"


INBOUND = {
    names.REFERRAL_CREATED: Message(
        "referral-created",
        names.REFERRAL_CREATED,
        "referral-created",
        "A GP system's referral (CONTRACT §3); also put here by POST /fhir/Bundle.",
        "application/json",
        _fhir("Bundle", "A referral Bundle (message, collection or transaction):"),
        "InboundHeaders",
    ),
    names.CONSENT_GRANTED: Message(
        "consent-granted",
        names.CONSENT_GRANTED,
        "consent-granted",
        "The patient's consent, status active; also put here by POST /fhir/Consent.",
        "application/json",
        _fhir("Consent", "A Consent (status active):"),
        "InboundHeaders",
    ),
    names.CONSENT_WITHDRAWN: Message(
        "consent-withdrawn",
        names.CONSENT_WITHDRAWN,
        "consent-withdrawn",
        "A withdrawal (the Consent, status inactive or rejected) or an objection.",
        "application/json",
        _fhir("Consent", "A Consent (status inactive or rejected):"),
        "InboundHeaders",
    ),
    names.FEEDBACK_RETURNED: Message(
        "feedback-returned",
        names.FEEDBACK_RETURNED,
        "feedback-returned",
        "Feedback from the welfare organisation the referral was released to (CONTRACT §5).",
        "application/json",
        WelfareFeedback,
        "InboundHeaders",
    ),
}
WELFARE = names.welfare_referrals(PARTICIPANT)
WMO = names.wmo_registrations(CBS_CODE)
HIS = names.his_feedback(PARTICIPANT)
OUTBOUND = (
    Message(
        "welfare-referral-released",
        WELFARE,
        "referral-released",
        "A referral released after consent: the minimised welfare intake (CONTRACT §4).",
        "application/json",
        WelfareIntake,
    ),
    Message(
        "welfare-referral-updated",
        WELFARE,
        "referral-updated",
        "What the organisation may see changed: the intake again, same registration_id.",
        "application/json",
        WelfareIntake,
    ),
    Message(
        "welfare-referral-revoked",
        WELFARE,
        "referral-revoked",
        "The consent was withdrawn (or the patient objected): nothing more will follow.",
        "application/json",
        ReferralRevokedNotice,
    ),
    Message(
        "welfare-contact-reminder",
        WELFARE,
        "contact-reminder",
        "No contact reported within contact_within_days of the release.",
        "application/json",
        ContactReminder,
    ),
    Message(
        "wmo-registration",
        WMO,
        "referral-released",
        "The municipal registration, when a consent names the municipality.",
        "application/xml",
        IWMO_XML,
    ),
    Message(
        "wmo-registration-updated",
        WMO,
        "referral-updated",
        "The registration again after a change the municipality may see.",
        "application/xml",
        IWMO_XML,
    ),
    Message(
        "wmo-referral-revoked",
        WMO,
        "referral-revoked",
        "The consent was withdrawn: JSON, as on the welfare topic.",
        "application/json",
        ReferralRevokedNotice,
    ),
    Message(
        "his-feedback-forwarded",
        HIS,
        "feedback-forwarded",
        "Feedback for the referring practice: a collection Bundle with a Task and a "
        "Communication (CONTRACT §5).",
        "application/fhir+json",
        _fhir("Bundle", "A collection Bundle (Task basedOn the ServiceRequest, Communication):"),
    ),
    Message(
        "his-contact-overdue",
        HIS,
        "contact-overdue",
        "The contact term passed without contact: a Task, status requested, business status "
        "contact-overdue.",
        "application/fhir+json",
        _fhir("Bundle", "A collection Bundle with the Task:"),
    ),
    Message(
        "dead-letter",
        names.DEAD_LETTER,
        "dead-letter",
        "A message the hub could not handle: original key, bytes and headers unchanged, "
        "plus the reason and origin (CONTRACT §6).",
        "application/octet-stream",
        ORIGINAL_BYTES,
        "DeadLetterHeaders",
        "the original record's key, unchanged",
    ),
    Message(
        "audit-recorded",
        names.AUDIT,
        "audit-recorded",
        "One entry of the hash-chained audit trail (NEN 7513 fields, CONTRACT §7).",
        "application/fhir+json",
        _fhir("AuditEvent", "An AuditEvent (the client named by a keyed pseudonym, no BSN):"),
        key_text="the referral id (else the registration id, else `audit`)",
    ),
)
FACADE = (names.REFERRAL_CREATED, names.CONSENT_GRANTED)
"""Inbound topics the hub itself also writes to (the FHIR facade)."""

CHANNELS = {
    names.REFERRAL_CREATED: ("referral-created", "FHIR R4 referral Bundles from GP systems."),
    names.CONSENT_GRANTED: ("consent-granted", "Consents from GP systems."),
    names.CONSENT_WITHDRAWN: ("consent-withdrawn", "Withdrawals and objections."),
    names.FEEDBACK_RETURNED: ("feedback-returned", "Feedback from welfare organisations."),
    WELFARE: ("welfare-referrals", "One welfare participant's releases and notices."),
    WMO: ("wmo-registrations", "One municipality's registrations and notices."),
    HIS: ("his-feedback", "One GP practice's feedback and overdue notices."),
    names.DEAD_LETTER: ("dead-letter", "Everything the hub could not handle."),
    names.AUDIT: ("audit", "The audit trail, as published through the outbox."),
}
PARAMETERS = {
    PARTICIPANT: ("participant_id", "the participant's id from the participants file"),
    CBS_CODE: ("cbs_code", "the municipality's 4-digit CBS code"),
}


def _string(description: str, **extra: Any) -> dict[str, Any]:
    return {"type": "string", "description": description, **extra}


CE_HEADERS = {
    "ce_specversion": _string("CloudEvents version", const="1.0"),
    "ce_id": _string("deterministic message id (a UUIDv5 of the cause)"),
    "ce_source": _string("the hub", const="urn:schakel:hub"),
    "ce_type": _string("nl.schakel.<event>.v1"),
    "ce_time": _string("RFC 3339", format="date-time"),
    "ce_subject": _string("the referral id"),
    "content-type": _string("the payload's media type"),
    Header.TRACEPARENT: _string(
        "W3C trace context, continued from the message that caused this one",
        pattern="^00-[0-9a-f]{32}-[0-9a-f]{16}-[0-9a-f]{2}$",
    ),
}
HEADER_SCHEMAS = {
    "CloudEventsHeaders": {
        "title": "CloudEventsHeaders",
        "description": "CloudEvents 1.0 Kafka binary mode, and a W3C traceparent.",
        "type": "object",
        "properties": CE_HEADERS,
        "required": [
            "ce_specversion",
            "ce_id",
            "ce_source",
            "ce_type",
            "ce_time",
            "content-type",
            Header.TRACEPARENT,
        ],
    },
    "InboundHeaders": {
        "title": "InboundHeaders",
        "description": "Accepted with or without CloudEvents headers (and whatever their "
        "content-type: the body is read as JSON); a valid traceparent is continued by "
        "everything the message causes.",
        "type": "object",
        "properties": {
            k: v for k, v in CE_HEADERS.items() if k not in ("ce_source", "ce_specversion")
        },
    },
    "DeadLetterHeaders": {
        "title": "DeadLetterHeaders",
        "description": "The original headers, unchanged (their ce_* and traceparent too), "
        "plus these; values are UTF-8 strings, never personal data.",
        "type": "object",
        "properties": {
            Header.ERROR_REASON: {
                **_string("a short code (README, Bad input, says what each means)"),
                "enum": list(DEAD_LETTER_REASONS),
            },
            Header.ERROR_DETAIL: _string("human text, no personal data"),
            Header.ORIGINAL_TOPIC: _string("the topic as on the broker, prefix included"),
            Header.ORIGINAL_PARTITION: _string("decimal", pattern="^[0-9]+$"),
            Header.ORIGINAL_OFFSET: _string("decimal", pattern="^[0-9]+$"),
        },
        "required": [
            Header.ERROR_REASON,
            Header.ERROR_DETAIL,
            Header.ORIGINAL_TOPIC,
            Header.ORIGINAL_PARTITION,
            Header.ORIGINAL_OFFSET,
        ],
    },
}
DESCRIPTION = (
    "Every topic of the Schakel hub (CONTRACT §2). Topic names take the optional "
    "SCHAKEL_TOPIC_PREFIX, prepended exactly as given (`acc1.` gives `acc1.referral-created`); "
    "the addresses here are without it. Every message about one referral is keyed by the "
    "referral id, so it stays ordered on one partition. The hub writes its messages through "
    "a transactional outbox (effectively once per ce_id). Besides these, the hub writes one "
    "record at start-up to its own marker topic `hub-epoch` (ce_type "
    "nl.schakel.hub-epoch.v1), which only the hub reads: its absence tells the hub that the "
    "broker lost its state."
)


def _docs_hub() -> Hub:
    """A hub that is never started: only what the routers read when they are built."""
    settings = HubSettings(
        topic_prefix="", consumer_group_prefix="schakel", participants=DEMO_PARTICIPANTS
    )
    return Hub(
        settings=settings,
        participants=load_participants(DEMO_PARTICIPANTS),
        store=Store("sqlite://"),
        topics=Topics(""),
    )


def _broker() -> KafkaBroker:
    hub = _docs_hub()
    tuning = ConsumerTuning.choose(
        embedded=False,
        session_timeout_ms=None,
        heartbeat_interval_ms=None,
        fetch_max_wait_ms=hub.settings.fetch_max_wait_ms,
        max_message_bytes=hub.settings.max_message_bytes,
    )
    broker = KafkaBroker(
        "localhost:9092",
        apply_types=False,  # as the hub's (services.hub)
        description="The deployment's Kafka (KAFKA_BOOTSTRAP_SERVERS); without it, `schakel run` "
        "starts the embedded broker.",
    )
    broker.include_router(intake_router(hub, tuning, AssignmentTracker("intake")))
    broker.include_router(
        consent_router(hub, tuning, AssignmentTracker("granted"), AssignmentTracker("withdrawn"))
    )
    broker.include_router(feedback_router(hub, tuning, AssignmentTracker("feedback")))
    outbound = KafkaRouter()
    for message in OUTBOUND:
        outbound.publisher(
            message.address,
            title=message.key,
            description=message.summary,
            schema=message.payload if isinstance(message.payload, type) else None,
        )
    for topic in FACADE:
        outbound.publisher(topic, title=f"facade-{topic}", description=INBOUND[topic].summary)
    broker.include_router(outbound)
    return broker


def _pointer(name: str) -> str:
    return SCHEMA_REF + quote(name.replace("~", "~0").replace("/", "~1"), safe="~:._-")


def _model_schema(model: type[BaseModel], schemas: dict[str, Any]) -> dict[str, str]:
    schema = _without_ids(model.model_json_schema(ref_template=SCHEMA_REF + "{model}"))
    for name, sub in schema.pop("$defs", {}).items():
        schemas.setdefault(name, sub)
    name = str(schema.get("title", model.__name__))
    schemas.setdefault(name, schema)
    return {"$ref": _pointer(name)}


def _without_ids(value: Any) -> Any:
    """`$id` in an embedded schema would re-base its `#/components/...` references."""
    if isinstance(value, dict):
        return {k: _without_ids(v) for k, v in value.items() if k != "$id"}
    if isinstance(value, list):
        return [_without_ids(v) for v in value]
    return value


def references(value: Any) -> list[str]:
    """Every `$ref` string in a JSON document."""
    if isinstance(value, dict):
        found = [value["$ref"]] if isinstance(value.get("$ref"), str) else []
        return found + [r for v in value.values() for r in references(v)]
    if isinstance(value, list):
        return [r for v in value for r in references(v)]
    return []


def _referenced(document: Any, schemas: dict[str, Any]) -> set[str]:
    """The component schemas reachable from the document (FastStream leaves placeholders)."""
    seen: set[str] = set()
    todo = references(document)
    while todo:
        ref = todo.pop()
        if not ref.startswith(SCHEMA_REF):
            continue
        name = unquote(ref[len(SCHEMA_REF) :]).replace("~1", "/").replace("~0", "~")
        if name in schemas and name not in seen:
            seen.add(name)
            todo.extend(references(schemas[name]))
    return seen


def _component_names(document: dict[str, Any]) -> dict[str, Any]:
    """AsyncAPI component keys are `[A-Za-z0-9._-]+`: pydantic titles with spaces
    ("Schakel welfare intake") become `Schakel-welfare-intake`, references likewise."""
    schemas = document["components"]["schemas"]
    renamed = {k: re.sub(r"[^A-Za-z0-9._-]+", "-", k) for k in schemas}
    document["components"]["schemas"] = {renamed[k]: v for k, v in schemas.items()}
    pointers = {_pointer(old): SCHEMA_REF + new for old, new in renamed.items()}

    def rewrite(value: Any) -> Any:
        if isinstance(value, dict):
            return {
                k: pointers.get(v, v) if k == "$ref" and isinstance(v, str) else rewrite(v)
                for k, v in value.items()
            }
        if isinstance(value, list):
            return [rewrite(v) for v in value]
        return value

    return rewrite(document)  # type: ignore[no-any-return]


def _message(spec: Message, payload: dict[str, Any]) -> dict[str, Any]:
    return {
        # a dead letter keeps the original's headers: it has no ce_type of its own
        "name": spec.key if spec.address == names.DEAD_LETTER else ce_type(spec.event),
        "title": spec.key,
        "summary": spec.summary,
        "contentType": spec.content_type,
        "headers": {"$ref": SCHEMA_REF + spec.headers},
        "payload": payload,
        "bindings": {
            "kafka": {
                "key": {"type": "string", "description": spec.key_text},
                "bindingVersion": "0.5.0",
            }
        },
    }


def asyncapi_document() -> dict[str, Any]:
    broker = _broker()
    groups = dict((topic, group) for topic, group in subscriptions(broker))
    generated = json.loads(
        AsyncAPI(broker, title="Schakel", version="1", description=DESCRIPTION)
        .to_specification()
        .to_json()
    )
    schemas: dict[str, Any] = _without_ids(generated["components"].get("schemas", {}))
    schemas.pop("EmptyPayload", None)
    schemas.update(copy.deepcopy(HEADER_SCHEMAS))
    by_key = {m.key: m for m in OUTBOUND} | {m.address: m for m in INBOUND.values()}
    channels: dict[str, Any] = {}
    messages: dict[str, Any] = {}
    operations: dict[str, Any] = {}
    for op in generated["operations"].values():
        fs_key = op["channel"]["$ref"].rsplit("/", 1)[1]
        fs_channel = generated["channels"][fs_key]
        address = fs_channel["address"]
        receive = op["action"] == "receive"
        spec = by_key[address] if receive or fs_key.startswith("facade-") else by_key[fs_key]
        if spec.key not in messages:
            fs_message = generated["components"]["messages"][
                next(iter(fs_channel["messages"].values()))["$ref"].rsplit("/", 1)[1]
            ]
            if isinstance(spec.payload, dict):
                payload: dict[str, Any] = copy.deepcopy(spec.payload)
            elif receive:
                payload = _model_schema(spec.payload, schemas)
            else:
                payload = fs_message["payload"]
            messages[spec.key] = _message(spec, payload)
        channel_key, description = CHANNELS[address]
        channel = channels.setdefault(
            channel_key,
            {"address": address, "description": description, "messages": {}},
        )
        channel["messages"][spec.key] = {"$ref": f"#/components/messages/{spec.key}"}
        for template, (param, text) in PARAMETERS.items():
            if template in address:
                channel["parameters"] = {param: {"description": text}}
        if "{" not in address:
            channel["bindings"] = {"kafka": {"topic": address, "bindingVersion": "0.5.0"}}
        operation: dict[str, Any] = {
            "action": op["action"],
            "channel": {"$ref": f"#/channels/{channel_key}"},
            "messages": [{"$ref": f"#/channels/{channel_key}/messages/{spec.key}"}],
        }
        if receive:
            operation["summary"] = fs_channel.get("description", "")
            operation["bindings"] = {
                "kafka": {
                    "groupId": {
                        "type": "string",
                        "description": "<SCHAKEL_TOPIC_PREFIX><SCHAKEL_CONSUMER_GROUP_PREFIX>-…",
                        "enum": [groups[address]],
                    },
                    "bindingVersion": "0.5.0",
                }
            }
            operations[f"receive-{spec.key}"] = operation
        else:
            operation["summary"] = (
                "The FHIR facade puts a checked submission here."
                if fs_key.startswith("facade-")
                else "Written through the outbox relay."
            )
            operations[f"send-{fs_key}"] = operation
    used = _referenced({"c": channels, "o": operations, "m": messages}, schemas)
    return _component_names(
        {
            "asyncapi": generated["asyncapi"],
            "info": generated["info"],
            "defaultContentType": "application/json",
            "servers": generated["servers"],
            "channels": channels,
            "operations": operations,
            "components": {"messages": messages, "schemas": {k: schemas[k] for k in sorted(used)}},
        }
    )


def render_asyncapi() -> str:
    return json.dumps(asyncapi_document(), indent=2, ensure_ascii=False, sort_keys=True) + "\n"
