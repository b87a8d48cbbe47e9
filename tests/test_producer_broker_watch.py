"""A publisher whose Kafka producer forgot every broker replaces it, and every event still reaches
Kafka exactly once.

The state itself (librdkafka left knowing no broker around a broker restart) comes from a real
broker only by chance (see `assetlog/broker_watch.py`); here the statistics a wedged producer
reports (no broker at all: a producer has no logical group coordinator) are handed to the watch,
the one fault given by hand, and librdkafka's own statistics are switched off so that nothing
contradicts them. Everything else is real: the broker, the outbox, the producers, and the events
read back from the topics.
"""

from __future__ import annotations

import json
import logging
from collections import Counter

from fault_support import wait_for
from producer_support import read_published

from assetlog.broker_watch import knows_a_broker
from assetlog.producer import Publisher, materialize, publishing
from assetlog.producer.outbox import Outbox

# librdkafka's statistics of a producer that dropped every broker: not even a bootstrap one is left.
WEDGED = json.dumps({"type": "producer", "brokers": {}})
NO_STATISTICS = {"statistics.interval.ms": 0}  # the test alone says what the statistics show


@materialize("s3://wedge/out", asset_deps=["s3://wedge/in"])
def build(n: int) -> int:
    return n


def _outbox_events(directory) -> int:
    outbox = Outbox(directory)
    try:
        return outbox.status()["events"]
    finally:
        outbox.close()


def test_a_connected_publishers_statistics_name_a_broker(isolated):
    """No false alarm: a healthy producer's own statistics (every 200 ms here) list the broker it learned."""
    with Publisher(isolated.settings, producer_config={"statistics.interval.ms": 200}) as publisher:
        wait_for(lambda: publisher.brokers.latest is not None, "the producer's statistics", timeout=30)
        latest = publisher.brokers.latest
        assert latest is not None and knows_a_broker(latest["brokers"]), latest["brokers"]
        assert not publisher.brokers.wedged() and publisher.reconnects == 0


def test_a_publisher_whose_producer_knows_no_broker_replaces_it_and_delivers_every_event_once(isolated, caplog):
    caplog.set_level(logging.WARNING, logger="assetlog.producer")
    # linger.ms keeps the first events in the old producer's queue, never sent (nothing hurries it
    # before the flush): the replacement finds them undelivered, as a wedged producer would hold them.
    publisher = Publisher(isolated.settings, producer_config={**NO_STATISTICS, "linger.ms": 20000})
    try:
        with publishing(publisher):
            for n in range(5):
                build(n)  # outside a flow: nothing flushes
            assert publisher.wait_committed() is None
            wait_for(lambda: publisher._sender is not None and publisher._sender.epoch_events == 10,
                     "the 10 events (a materialization and a dependency per run) handed to the producer", timeout=30)
            old = publisher._sender.producer
            publisher.brokers.grace = 0
            publisher.brokers(WEDGED)  # what the statistics say once the producer dropped all its brokers
            wait_for(lambda: publisher.reconnects == 1, "the producer replaced", timeout=30)
            assert publisher._sender.producer is not old
            for n in range(5, 8):
                build(n)  # through the new producer
            result = publisher.flush(30)
        assert result.complete, result
        assert _outbox_events(isolated.settings.outbox_dir) == 0
    finally:
        publisher.close()
    published = read_published(isolated.settings, at_least=16)
    ids = Counter(m.record["event_id"] for m in published)
    assert len(published) == 16 and set(ids.values()) == {1}, ids.most_common(3)
    assert sorted(m.key for m in published) == sorted(["s3://wedge/out"] * 16)
    lines = [r.getMessage() for r in caplog.records if "known no broker" in r.getMessage()]
    assert len(lines) == 1 and "the 10 lineage events it had not delivered" in lines[0], lines
    assert not [r for r in caplog.records if "were not delivered" in r.getMessage()]  # one line, not one per row
