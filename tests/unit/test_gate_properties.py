"""Model-based test of the consent gate (issue #4).

Random interleavings of referrals, consents (several recipients, patient-level or per
referral, with periods and data classes), withdrawals, objections, the clock moving on, and
re-deliveries of all of those, driven through the real gate code. After every step:

- a release to R for referral X happens if and only if a covering consent exists at that
  moment (checked both ways: nothing released without cover, nothing covered left
  unreleased), and at most once per referral x recipient;
- a revoke notice goes exactly to the recipients that received X while the withdrawn
  consent (or any consent, for an objection) was in force for them, once; and, when time
  passes, to those that received X while a consent whose period has ended was in force for
  them and that no consent covers any more;
- so nothing released stays standing (readable by its recipient) without a covering
  consent.

Coverage is computed here independently of `services.domain.consent`.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from hypothesis import HealthCheck, event, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from adapters.fhir.referral import referral_from_fhir
from adapters.participants import load_participants
from adapters.storage.store import Store
from adapters.storage.tables import metadata
from schemas.consent import Consent, DataClass, ReferralRef
from schemas.referral import Referral
from services.demo.samples import REFERRAL_SYSTEM, referral_bundle
from services.domain import gate
from services.settings import DEMO_PARTICIPANTS
from tests.unit.fakes import MemoryGateStore

T0 = datetime(2026, 12, 1, 9, 0, tzinfo=UTC)
PATIENTS = ("999900018", "999900031")
W1, W2, MUNI = "welzijn-hoogeveen", "welzijn-de-wolden", "gemeente-hoogeveen"
RECIPIENTS = (W1, W2, MUNI)
POLICY = gate.GatePolicy(municipalities=frozenset({MUNI}))
# referral id -> (patient, routed welfare organisation); fixed, so re-sends are re-sends
REFERRALS = {
    "R1": (PATIENTS[0], W1),
    "R2": (PATIENTS[0], W2),
    "R3": (PATIENTS[1], W1),
    "R4": (PATIENTS[1], W1),
}
CONSENT_IDS = ("C1", "C2", "C3", "C4", "C5", "C6", "C7", "C8")

_PARTICIPANTS = load_participants(DEMO_PARTICIPANTS)
_TEMPLATE = referral_from_fhir(referral_bundle("TEMPLATE"), _PARTICIPANTS)


def make_referral(rid: str, reason_variant: int = 0) -> Referral:
    patient, _ = REFERRALS[rid]
    client = _TEMPLATE.client.model_copy(update={"bsn": patient})
    reason = (
        _TEMPLATE.reason
        if reason_variant == 0
        else f"{_TEMPLATE.reason} (aangepast {reason_variant})"
    )
    return _TEMPLATE.model_copy(update={"referral_id": rid, "client": client, "reason": reason})


hours = st.integers(min_value=-72, max_value=240)
maybe_hours = st.one_of(st.none(), st.none(), hours)  # mostly open-ended
classes = st.one_of(
    st.just(frozenset(DataClass)),
    st.sets(st.sampled_from(list(DataClass)), min_size=1).map(frozenset),  # may lack REFERRAL
    st.sets(st.sampled_from(list(DataClass))).map(lambda c: frozenset(c | {DataClass.REFERRAL})),
)


@st.composite
def consents(draw: st.DrawFn) -> Consent:
    """Biased towards consents that matter: most name a referral's patient, its routed
    organisation or the municipality; some are for someone else, or lack the referral class."""
    rid = draw(st.sampled_from(sorted(REFERRALS)))
    patient, routed = REFERRALS[rid]
    per_referral = draw(st.booleans())
    refs = (
        {rid, *draw(st.sets(st.sampled_from(sorted(REFERRALS)), max_size=1))}
        if per_referral
        else set()
    )
    bsn = draw(
        st.sampled_from(
            [patient, patient, None if per_referral else patient, PATIENTS[0], PATIENTS[1]]
        )
    )
    recipients = ({routed} if draw(st.booleans()) else set()) | draw(
        st.sets(st.sampled_from(RECIPIENTS), max_size=2)
    )
    start, end = draw(maybe_hours), draw(maybe_hours)
    return Consent(
        consent_id=draw(st.sampled_from(CONSENT_IDS)),
        status="active",
        patient_bsn=bsn,
        recipients=tuple(sorted(recipients or {routed})),
        referrals=tuple(ReferralRef(system=REFERRAL_SYSTEM, value=r) for r in sorted(refs)),
        classes=draw(classes),
        period_start=None if start is None else T0 + timedelta(hours=start),
        period_end=None if end is None else T0 + timedelta(hours=end),
    )


class GateMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.store = self.make_store()
        self.now = T0
        self.referrals: dict[str, Referral] = {}
        self.consents: dict[str, Consent] = {}  # first grant of each id: its content
        self.withdrawn: set[str] = set()
        self.objecting: set[str] = set()
        self.released: set[tuple[str, str]] = set()
        self.revoked: set[tuple[str, str]] = set()

    # --- the system under test ----------------------------------------------------------
    def make_store(self):  # type: ignore[no-untyped-def]
        return MemoryGateStore()

    def run(self, work):  # type: ignore[no-untyped-def]
        return work(self.store)

    # --- the model ----------------------------------------------------------------------
    def in_force(self, c: Consent, x: Referral, recipient: str, at: datetime) -> bool:
        """A consent applies to X and recipient at `at` (the model's own statement)."""
        return (
            c.consent_id not in self.withdrawn
            and recipient in c.recipients
            and (c.patient_bsn is None or c.patient_bsn == x.client.bsn)
            and (
                x.referral_id in {r.value for r in c.referrals}
                if c.referrals
                else c.patient_bsn == x.client.bsn
            )
            and (c.period_start is None or c.period_start <= at)
            and (c.period_end is None or at <= c.period_end)
        )

    def covered(self, rid: str, recipient: str) -> bool:
        x = self.referrals[rid]
        routed = REFERRALS[rid][1]
        if recipient != routed and recipient != MUNI:
            return False
        if x.client.bsn in self.objecting:
            return False
        return any(
            self.in_force(c, x, recipient, self.now) and DataClass.REFERRAL in c.classes
            for c in self.consents.values()
        )

    def check(self, result: gate.GateResult, expected_revokes: set[tuple[str, str]]) -> None:
        for release in result.releases:
            pair = (release.referral_id, release.recipient_id)
            assert pair not in self.released, f"second release of {pair}"
            assert self.covered(*pair), f"released {pair} without a covering consent"
            self.released.add(pair)
        revoked = {(r.referral_id, r.recipient_id) for r in result.revocations}
        assert len(revoked) == len(result.revocations), "a pair revoked twice in one step"
        assert revoked == expected_revokes, f"revoked {revoked}, expected {expected_revokes}"
        assert not revoked & self.revoked
        self.revoked |= revoked
        for output in result.outputs:
            event(f"output: {output.action} to {getattr(output.event, 'recipient_kind', 'gp')}")
            if (
                output.disclosure is not None
                and getattr(output.event, "recipient_kind", None) == "welfare"
            ):
                assert output.disclosure.bsn is None

    @invariant()
    def released_pairs_stand_only_while_covered(self) -> None:
        for pair in self.released - self.revoked:
            assert self.covered(*pair), f"{pair} still stands without a covering consent"

    @invariant()
    def covered_pairs_are_released(self) -> None:
        for rid in self.referrals:
            for recipient in RECIPIENTS:
                if self.covered(rid, recipient):
                    assert (rid, recipient) in self.released, f"{rid}->{recipient} covered but held"

    # --- the steps ----------------------------------------------------------------------
    @rule(rid=st.sampled_from(sorted(REFERRALS)), variant=st.sampled_from([0, 0, 0, 1]))
    def send_referral(self, rid: str, variant: int) -> None:
        referral = make_referral(rid, variant)
        result = self.run(
            lambda s: gate.on_referral(s, referral, REFERRALS[rid][1], self.now, POLICY)
        )
        self.referrals[rid] = referral
        self.check(result, set())

    @rule(consent=consents())
    def grant(self, consent: Consent) -> None:
        consent = self.consents.setdefault(
            consent.consent_id, consent
        )  # a re-grant repeats the first
        result = self.run(lambda s: gate.on_consent(s, consent, self.now, POLICY))
        self.check(result, set())

    @rule(consent=consents())
    def grant_another(self, consent: Consent) -> None:
        """Grants are the commonest event (a second rule doubles their share)."""
        self.grant(consent)

    @rule(rid=st.sampled_from(sorted(REFERRALS)))
    def send_another_referral(self, rid: str) -> None:
        self.send_referral(rid, 0)

    @rule(cid=st.sampled_from(CONSENT_IDS))
    def withdraw(self, cid: str) -> None:
        before = self.consents.get(cid)
        expected = set()
        if before is not None:
            for pair in self.released - self.revoked:
                x = self.referrals[pair[0]]
                if self.in_force(before, x, pair[1], self.now):
                    expected.add(pair)
        withdrawal = (
            before
            or Consent(
                consent_id=cid,
                status="active",
                patient_bsn=PATIENTS[0],
                referrals=(ReferralRef(value="R1"),),
            )
        ).model_copy(update={"status": "inactive"})
        self.withdrawn.add(cid)
        result = self.run(lambda s: gate.on_consent(s, withdrawal, self.now, POLICY))
        # still covered by another consent: no revoke
        self.check(result, {p for p in expected if not self.covered(*p)})

    @rule(patient=st.sampled_from(PATIENTS))
    def object(self, patient: str) -> None:
        objection = Consent(
            consent_id=f"O-{patient}", status="active", kind="objection", patient_bsn=patient
        )
        if objection.consent_id in self.withdrawn:
            return  # a lifted objection id cannot be re-raised (same rule as every consent)
        self.objecting.add(patient)
        expected = {
            p for p in self.released - self.revoked if self.referrals[p[0]].client.bsn == patient
        }
        result = self.run(lambda s: gate.on_consent(s, objection, self.now, POLICY))
        self.check(result, expected)

    @precondition(lambda self: bool(self.objecting))
    @rule(data=st.data())
    def lift_objection(self, data: st.DataObject) -> None:
        patient = data.draw(st.sampled_from(sorted(self.objecting)))
        lifted = Consent(
            consent_id=f"O-{patient}", status="inactive", kind="objection", patient_bsn=patient
        )
        self.objecting.discard(patient)
        self.withdrawn.add(lifted.consent_id)
        result = self.run(lambda s: gate.on_consent(s, lifted, self.now, POLICY))
        self.check(result, set())

    @rule(delta=st.integers(min_value=1, max_value=96))
    def time_passes(self, delta: int) -> None:
        self.now += timedelta(hours=delta)
        ended = [
            c
            for c in self.consents.values()
            if c.period_end is not None and c.period_end < self.now and not c.is_objection
        ]
        expected = set()
        for pair in self.released - self.revoked:
            x = self.referrals[pair[0]]
            was_in_force = any(self.in_force(c, x, pair[1], c.period_end) for c in ended)  # type: ignore[arg-type]
            if was_in_force and not self.covered(*pair):
                expected.add(pair)
        result = self.run(lambda s: gate.on_tick(s, self.now, POLICY))
        self.check(result, expected)
        for revocation in result.revocations:
            assert revocation.reason == "consent-expired"


GateMachine.TestCase.settings = settings(
    max_examples=2000,
    stateful_step_count=40,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
test_gate_model_in_memory = GateMachine.TestCase


class SqlGateMachine(GateMachine):
    """The same interleavings through the SQL store (SQLite), transaction per step."""

    def make_store(self):  # type: ignore[no-untyped-def]
        store = Store("sqlite://")
        metadata.create_all(store.engine)
        return store

    def run(self, work):  # type: ignore[no-untyped-def]
        return self.store.run(work)

    def teardown(self) -> None:
        self.store.dispose()


SqlGateMachine.TestCase.settings = settings(
    max_examples=80,
    stateful_step_count=20,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
test_gate_model_on_sqlite = SqlGateMachine.TestCase
