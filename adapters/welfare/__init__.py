"""The welfare organisations' formats: intake JSON out (feedback JSON in, later)."""
