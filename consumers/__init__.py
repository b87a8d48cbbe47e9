"""Kafka -> batches -> projections -> PostgreSQL.

Runners own the Kafka consumer, batching, offsets (stored in PostgreSQL in the
same transaction as the projection's writes), signals and dead letters. They
know nothing about what the tables mean.
"""
