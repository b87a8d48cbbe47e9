"""The write side: workflow code -> events.

Assets, `@materialize`, a small flow/task runtime that infers lineage from the
task graph, and the outbox + Kafka producer. It never reads Kafka or PostgreSQL.
"""
