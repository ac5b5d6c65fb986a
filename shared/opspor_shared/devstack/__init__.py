"""Embedded stand-ins for local runs and tests: PostgreSQL, a Kafka-protocol broker and a
TLS-only secure-mailbox server. Production uses the real servers through settings."""
