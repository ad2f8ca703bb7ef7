"""Intake: `referral-created` in; validated, routed referrals held at the consent gate."""
