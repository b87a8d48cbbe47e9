"""Real Prefect flows -> Assetlog: a Prefect startup plugin and a follower of a Prefect server's events.

It maps Prefect's asset events to Assetlog's and publishes them through
`assetlog.producer`; it never changes what Prefect itself does or emits.
"""
