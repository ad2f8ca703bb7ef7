"""Schakel's services: one FastStream app per concern, plus the domain rules they share."""
