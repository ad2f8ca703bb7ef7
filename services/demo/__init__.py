"""The demo: participants, synthetic referral and consent, and the journey printer.

All data here is fictional; the BSNs come from the iWmo test range (they pass the 11-proef
but belong to nobody)."""
