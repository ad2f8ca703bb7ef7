"""Consent: `consent-granted` and `consent-withdrawn` in; releases held referrals."""
