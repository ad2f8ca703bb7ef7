"""Edges: FHIR, welfare and municipal formats, storage, broker, logging."""
