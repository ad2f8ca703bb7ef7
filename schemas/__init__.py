"""The contract: canonical event models, identifiers, topic and header names.

Imports pydantic and the standard library only (checked by import-linter).
"""
