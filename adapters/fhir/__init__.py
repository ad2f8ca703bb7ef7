"""FHIR R4 in and out. Pure functions: bytes or dicts in, canonical models out."""
