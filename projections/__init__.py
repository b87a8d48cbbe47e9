"""What the PostgreSQL tables mean: migrations, event -> SQL effects, read-only queries.

Projections never talk to Kafka: they are given decoded events with their
positions and a database connection.
"""
