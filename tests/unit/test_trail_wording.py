"""A revoke notice's reason in the two places that show it: the patient's access report
(its words) and the operator's `audit trail` (`TrailLine.what`). A withdrawal's notice
reads as it always did; one for a consent whose period ended says so."""

from __future__ import annotations

from datetime import UTC, datetime

from adapters.participants import load_participants
from services.audit_reports import TrailLine, subject_access_html
from services.settings import DEMO_PARTICIPANTS

AT = datetime(2027, 3, 1, 9, 30, tzinfo=UTC)


def _notice(detail: str) -> TrailLine:
    return TrailLine(
        7, AT, "revoke-notice", "hub", "welzijn-noord", "ids", "c-1", "success", detail
    )


def _report(line: TrailLine) -> str:
    return subject_access_html([line], load_participants(DEMO_PARTICIPANTS), AT)


def test_a_withdrawals_notice_is_named_by_its_action_alone() -> None:
    line = _notice("")
    assert line.what == "revoke-notice"
    report = _report(line)
    assert "notice: consent withdrawn" in report and "toestemming ingetrokken" in report
    assert "period ended" not in report


def test_an_expiry_notice_says_the_period_ended() -> None:
    line = _notice("consent-expired")
    assert line.what == "revoke-notice (consent-expired)"
    report = _report(line)
    assert "notice: consent period ended" in report and "toestemming verlopen" in report
    assert "consent withdrawn" not in report


def test_other_actions_details_stay_out_of_the_name() -> None:
    """A detail is shown with the action only for revoke notices: a refusal's reason or a
    feedback's sender is for the operator's columns, not a kind of event."""
    line = TrailLine(
        8,
        AT,
        "feedback-forwarded",
        "welzijn-noord",
        "hap",
        "feedback-status",
        "c-1",
        "success",
        "from welzijn-noord",
    )
    assert line.what == "feedback-forwarded"
    report = _report(line)
    assert "received feedback" in report and "from welzijn-noord" not in report
