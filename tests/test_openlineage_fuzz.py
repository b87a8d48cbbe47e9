"""1,000 fuzzed and hostile payloads against the running receiver: each refused with a reason (or
accepted, when a mutation happens to stay valid), the receiver still running, and the valid events
sent around them projected."""

from __future__ import annotations

import copy
import gzip
import uuid

import httpx2 as httpx
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from openlineage_receiver_support import migrate, project, receiver
from openlineage_support import pipeline, to_dict

from assetlog.query.store import LineageStore

_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=30),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4),
    max_leaves=12,
)


def _mutated(base: dict, data: st.DataObject) -> dict:
    """`base` with one value somewhere replaced by arbitrary JSON (or a key removed)."""
    event = copy.deepcopy(base)
    node, path = event, []
    while isinstance(node, dict | list) and node and data.draw(st.booleans()):
        keys = list(node.keys()) if isinstance(node, dict) else list(range(len(node)))
        key = data.draw(st.sampled_from(keys))
        if not isinstance(node[key], dict | list):
            break
        node, path = node[key], [*path, key]
    if isinstance(node, dict) and node:
        key = data.draw(st.sampled_from(list(node.keys())))
        if data.draw(st.booleans()):
            del node[key]
        else:
            node[key] = data.draw(_json)
    return event


_hostile = st.sampled_from([
    b"", b"null", b"[]", b"{}", b"{" * 5000, b"[" * 100000, b"\xff\xfe\x00garbage", b"\x1f\x8b\x08garbage",
    gzip.compress(b"{" * 10), gzip.compress(b" " * (2 << 20)), b'{"run": {"runId": 1}}',
    b'{"eventTime": "2026-01-01", "producer": "x", "schemaURL": "y", "dataset": {"namespace": "n", "name": "x"}}',
    b"x" * (1 << 20),
])


def test_fuzzed_and_hostile_payloads_are_refused_and_valid_events_still_flow(isolated):
    migrate(isolated)
    p = pipeline()
    valid = [to_dict(e) for e in p.events]
    base = valid[2]
    outcomes: dict[int, int] = {}
    with receiver(isolated) as (url, process), httpx.Client(base_url=url, timeout=30) as http:
        def post(body: bytes, gzipped: bool = False) -> httpx.Response:
            headers = {"content-type": "application/json", **({"content-encoding": "gzip"} if gzipped else {})}
            return http.post("/api/v1/lineage", content=body, headers=headers)

        for event in valid[:4]:
            assert post(_dumps(event)).status_code == 201

        @settings(max_examples=1000, deadline=None, database=None,
                  suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
        @given(st.data())
        def attack(data: st.DataObject) -> None:
            choice = data.draw(st.integers(0, 3))
            if choice == 0:
                body, gzipped = data.draw(_hostile), False
            elif choice == 1:
                body, gzipped = data.draw(st.binary(max_size=300)), data.draw(st.booleans())
            else:
                event = _mutated(base, data)
                event.setdefault("run", {})
                if isinstance(event["run"], dict) and choice == 3:
                    event["run"]["runId"] = str(uuid.uuid4())  # a fresh run: mutations must not leak into p's runs
                body, gzipped = _dumps(event), data.draw(st.booleans())
                if gzipped:
                    body = gzip.compress(body)
            response = post(body, gzipped)
            outcomes[response.status_code] = outcomes.get(response.status_code, 0) + 1
            assert response.status_code in (201, 400), response.text
            if response.status_code == 400:
                assert response.json()["error"]
            assert process.poll() is None

        attack()
        for event in valid[4:]:
            assert post(_dumps(event)).status_code == 201
    assert sum(outcomes.values()) == 1000 and outcomes.get(400, 0) > 500, outcomes
    project(isolated)
    with LineageStore(isolated.dsn) as store:
        assert store.asset(p.broken_key).last_materialization.error_message == "division by zero"
        assert [n.key for n in store.asset(p.sessions_key).upstream] == [p.topic_key]


def _dumps(value: object) -> bytes:
    import json

    return json.dumps(value).encode()
