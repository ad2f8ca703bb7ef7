"""Data minimisation (DOMAIN §5): what one recipient may receive, given the consented
data classes. The format adapters render a `Disclosure` and nothing else.

- welfare: name, birth date, the one-line reason, referrer; phone / e-mail / address only
  when consented; never the BSN.
- municipality: BSN (its format is keyed on it), name parts, birth date, gender, referrer;
  address only when consented; the reason only with the `reason` class (iWmo OP191);
  phone and e-mail never (the format has no place for them).
- nobody: diagnosis codes, medication, notes - the canonical `Referral` does not even keep them.
"""

from __future__ import annotations

from schemas.consent import DataClass
from schemas.disclosure import DisclosedReferrer, Disclosure, RecipientKind
from schemas.referral import Referral


def disclose(referral: Referral, kind: RecipientKind, classes: frozenset[DataClass]) -> Disclosure:
    client = referral.client
    welfare = kind == "welfare"
    return Disclosure(
        recipient_kind=kind,
        referral_id=referral.referral_id,
        authored_on=referral.authored_on,
        bsn=None if welfare else str(client.bsn),
        name=client.name,
        given_names=() if welfare else client.given_names,
        family_prefix=None if welfare else client.family_prefix,
        family_name=None if welfare else client.family_name,
        birth_date=client.birth_date,
        gender=None if welfare else client.gender,
        phone=client.phone if welfare and DataClass.CONTACT_PHONE in classes else None,
        email=client.email if welfare and DataClass.CONTACT_EMAIL in classes else None,
        address=client.address if DataClass.CONTACT_ADDRESS in classes else None,
        reason=referral.reason if welfare or DataClass.REASON in classes else None,
        referrer=DisclosedReferrer(
            name=referral.referrer.name,
            agb=referral.referrer.agb,
            practice_id=referral.referrer.practice_id,
            practice_name=referral.referrer.practice_name,
            practice_agb=referral.referrer.practice_agb,
        ),
    )
