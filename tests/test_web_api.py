"""`/api/...`: the web view's JSON on the real PostgreSQL, as the read-only role; bad input is 400/404, never a trace."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from conftest import Isolated
from events_factory import CUSTOMERS, DASHBOARD, GOLD, PROCESSED, SILVER, at
from psycopg import conninfo
from query_world import REPORT, REPORT_V1, reader_dsn
from starlette.testclient import TestClient
from web_support import HOSTILE, RAW_KEY, SPECIAL, web_store_fixture, web_world_fixture  # noqa: F401 - the `store` and `world` fixtures

from assetlog.query.store import LineageStore
from assetlog.web import create_app
from assetlog.web.app import SECURITY_HEADERS

UNREACHABLE = "postgresql://nobody@127.0.0.1:1/none?connect_timeout=2"


@pytest.fixture(scope="module")
def client(store: LineageStore) -> Iterator[TestClient]:
    with TestClient(create_app(store), raise_server_exceptions=False) as test_client:
        yield test_client


def get_json(client: TestClient, path: str, status: int = 200, **params: str) -> dict:
    answer = client.get(path, params=params)
    assert answer.status_code == status, answer.text
    assert answer.headers["content-type"] == "application/json"
    assert "Traceback" not in answer.text
    return answer.json()


def test_assets_answers_what_the_cli_prints(client: TestClient, store: LineageStore) -> None:
    assert get_json(client, "/api/assets") == store.search().to_json()
    found = get_json(client, "/api/assets", search="customer")
    assert PROCESSED in [a["key"] for a in found["assets"]] and DASHBOARD not in [a["key"] for a in found["assets"]]
    assert [a["key"] for a in get_json(client, "/api/assets", owner="bi-team")["assets"]] == [DASHBOARD]
    first = get_json(client, "/api/assets", limit="3")
    rest = get_json(client, "/api/assets", limit="1000", after=first["next_after"])
    everything = get_json(client, "/api/assets", limit="1000")
    assert [a["key"] for a in first["assets"] + rest["assets"]] == [a["key"] for a in everything["assets"]]


def test_every_valid_key_has_an_address(client: TestClient, store: LineageStore) -> None:
    for key in (SPECIAL, PROCESSED, RAW_KEY):
        assert get_json(client, "/api/asset", key=key) == store.asset(key).to_json()
    # `/` and `:` may stay unencoded in a query; `+` must be %2B (a bare + is a space).
    assert client.get(f"/api/asset?key={PROCESSED}").json()["key"] == PROCESSED
    assert client.get("/api/asset?key=s3://bucket/a%2Bb=c;d,e@f!$(1)*~.csv").json()["key"] == SPECIAL


def test_asset_as_of_a_time(client: TestClient) -> None:
    old = get_json(client, "/api/asset", key=REPORT, as_of=at(120).isoformat())
    assert old["properties"]["url"] == REPORT_V1["url"] and old["as_of"] is not None
    assert get_json(client, "/api/asset", key=REPORT)["properties"]["url"] is None


def test_lineage_by_direction_and_depth(client: TestClient, store: LineageStore) -> None:
    two = get_json(client, "/api/lineage", key=DASHBOARD, direction="upstream", depth="2")
    assert [n["key"] for n in two["nodes"]] == [DASHBOARD, GOLD, SILVER] and two["depth"] == 2
    assert get_json(client, "/api/lineage", key=DASHBOARD, direction="upstream", depth="all") == \
        store.upstream(DASHBOARD).to_json()
    assert get_json(client, "/api/lineage", key=PROCESSED) == store.lineage(PROCESSED).to_json()
    down = get_json(client, "/api/lineage", key=CUSTOMERS, direction="downstream")
    assert [n["key"] for n in down["nodes"]] == [CUSTOMERS, PROCESSED]
    cut = get_json(client, "/api/lineage", key=DASHBOARD, limit="2")
    assert cut["truncated"] is True and len(cut["nodes"]) == 2


def test_history_pages_by_cursor_or_number(client: TestClient) -> None:
    first = get_json(client, "/api/history", key=HOSTILE)
    assert len(first["entries"]) == 20 and first["entries"][0]["run"]["status"] == "FAILED"
    by_cursor = get_json(client, "/api/history", key=HOSTILE, before=first["next_cursor"])
    by_number = get_json(client, "/api/history", key=HOSTILE, page="2")
    assert by_cursor == by_number and len(by_number["entries"]) == 7 and by_number["next_cursor"] is None
    small = get_json(client, "/api/history", key=HOSTILE, limit="5", page="6")
    assert [e["run"]["task_name"] for e in small["entries"]] == ["rerun_00", "<svg onload=alert('task')>"]


@pytest.mark.parametrize("path, params, complaint", [
    ("/api/lineage", {"key": DASHBOARD, "depth": "0"}, "depth must be a whole number from 1 to 100, not 0"),
    ("/api/lineage", {"key": DASHBOARD, "depth": "ten"}, "depth must be a whole number from 1 to 100, not 'ten'"),
    ("/api/lineage", {"key": DASHBOARD, "depth": "101"}, "depth must be a whole number from 1 to 100"),
    ("/api/lineage", {"key": DASHBOARD, "direction": "sideways"}, "direction must be one of both, upstream"),
    ("/api/lineage", {"key": DASHBOARD, "limit": "0"}, "limit must be a whole number from 1"),
    ("/api/lineage", {"key": DASHBOARD, "as_of": "last tuesday"}, "as_of: 'last tuesday' is not an ISO-8601 time"),
    ("/api/asset", {"key": DASHBOARD, "as_of": "2025-13-45"}, "as_of:"),
    ("/api/history", {"key": DASHBOARD, "before": "not-a-cursor"}, "before: not a history cursor"),
    ("/api/history", {"key": DASHBOARD, "page": "0"}, "page must be a whole number from 1"),
    ("/api/history", {"key": DASHBOARD, "page": "2", "before": "2025-01-01"}, "either before (a cursor) or page"),
    ("/api/assets", {"limit": "1001"}, "limit must be a whole number from 1 to 1000"),
    ("/api/asset", {}, "the key parameter is required"),
    ("/api/lineage", {"key": ""}, "the key parameter is required"),
])
def test_bad_input_is_a_400_saying_what_to_send(client: TestClient, path: str, params: dict[str, str],
                                                 complaint: str) -> None:
    answer = get_json(client, path, 400, **params)
    assert answer["error"] == "bad_request" and complaint in answer["message"], answer


@pytest.mark.parametrize("path", ["/api/asset", "/api/lineage", "/api/history"])
def test_an_unknown_key_is_a_404_naming_it(client: TestClient, world: Isolated, path: str) -> None:
    answer = get_json(client, path, 404, key="s3://nowhere/missing.csv")
    params = conninfo.conninfo_to_dict(world.dsn)
    where = f"{world.database!r} on {params.get('host')}:{params.get('port')}"  # names the database it read
    assert answer == {"error": "not_found", "message": f"no asset 's3://nowhere/missing.csv' in database {where} "
                                                       "(keys are exact; try `assetlog assets --search`)"}


def test_an_unknown_address_is_a_404_and_writes_are_refused(client: TestClient) -> None:
    assert get_json(client, "/api/nothing-here", 404)["error"] == "not_found"
    refused = client.post("/api/assets", json={})
    assert refused.status_code == 405 and refused.json()["error"] == "http_error"


def test_every_answer_carries_the_security_headers(client: TestClient) -> None:
    for path in ("/api/assets", "/", "/api/asset?key=s3://nowhere/x.csv", "/static/style.css"):
        headers = client.get(path).headers
        assert {name: headers.get(name) for name in SECURITY_HEADERS} == SECURITY_HEADERS, path
    assert "script-src" not in SECURITY_HEADERS["content-security-policy"]  # default-src 'none' covers it


def test_an_unreachable_database_is_a_503_not_a_trace() -> None:
    with LineageStore(UNREACHABLE) as unreachable, \
            TestClient(create_app(unreachable), raise_server_exceptions=False) as down:
        answer = get_json(down, "/api/assets", 503)
        assert answer["error"] == "database_unavailable" and "cannot be reached" in answer["message"]
        page = down.get("/asset", params={"key": PROCESSED})
        assert page.status_code == 503 and "cannot be reached" in page.text and "Traceback" not in page.text


class BrokenStore(LineageStore):
    """Fault injection a real server cannot give on demand: a bug in the query layer."""

    def search(self, *args: object, **kwargs: object):  # type: ignore[override]
        raise RuntimeError("internal detail: password=hunter2")


def test_a_bug_is_a_500_that_reveals_nothing(world: Isolated) -> None:
    with BrokenStore(reader_dsn(world.dsn)) as broken, \
            TestClient(create_app(broken), raise_server_exceptions=False) as buggy:
        for path in ("/api/assets", "/"):
            answer = buggy.get(path)
            assert answer.status_code == 500 and "something went wrong" in answer.text
            assert "hunter2" not in answer.text and "Traceback" not in answer.text
            assert answer.headers["content-security-policy"] == SECURITY_HEADERS["content-security-policy"]
