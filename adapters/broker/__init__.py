"""Kafka edges: embedded broker, topic admin, CloudEvents headers, dead letters, outbox relay."""
