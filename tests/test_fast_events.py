"""Validation's fast path in C (projections/_fast_events.c) accepts only what `to_event` accepts, as the
same Event, and does accept the common valid event.

`to_event` holds the rules and the dead-letter reasons; `accept_checked` returns an Event only when every
check passes the common way, else None (then `to_event` decides). So for any record: the fast path's
answer is None, or exactly `to_event`'s Event (field values and types). Checked on hostile messages
(every field of every event type and schema version given a hostile value, decoded as a consumer decodes
them), on decoded records with one field replaced in memory by a value no decoder makes (subclasses,
tuples, naive times, missing fields, owners and edges at their size limits), and on realistic task runs,
where it must answer every event. No broker or database: validation is pure.

The extension must be built here (`pip install -e .` compiles it); `ASSETLOG_ALLOW_PURE_PYTHON=1`
allows its absence (docs/development.md).
"""

from __future__ import annotations

import json
import os
from datetime import UTC, datetime
from types import SimpleNamespace
from typing import Any

import pytest
from events_factory import Asset, TaskRun, Upstream, props
from hostile_events import Hostile, base_events, hostile_message, known_wedges
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from assetlog.config import Topics
from assetlog.projections import events as validation
from assetlog.projections.events import (
    _UUID_TEXT,
    MAX_EDGE_KEY_BYTES,
    MAX_OWNER_BYTES,
    Event,
    Position,
    to_event,
)
from assetlog.schemas import (
    DEPENDENCY,
    MATERIALIZATION,
    METADATA,
    RESTRICTED_ASSET_CHARACTERS,
    DecodeError,
    registry,
    validate_asset_key,
)

ALLOW_PURE_PYTHON = os.environ.get("ASSETLOG_ALLOW_PURE_PYTHON") == "1"
pytestmark = pytest.mark.skipif(validation.accept_checked is None and ALLOW_PURE_PYTHON,
                                reason="ASSETLOG_ALLOW_PURE_PYTHON=1 and the C extension is not built")
FAST = settings(max_examples=300, deadline=None, suppress_health_check=list(HealthCheck))
WORLD = SimpleNamespace(topics=Topics("fast"))
POSITION = Position("fast.t", 0, 7)


def test_the_extension_is_built_and_validation_uses_it():
    try:
        import assetlog.projections._fast_events as extension  # inside: its absence is what is tested
    except ImportError as exc:
        pytest.fail(f"the C extension is not built ({exc}): reinstall with `pip install -e .` (`./dev test` "
                    "does), or set ASSETLOG_ALLOW_PURE_PYTHON=1 where no C compiler is wanted")
    assert isinstance(validation.accept_checked, extension.Acceptor)
    assert validation._is_uuid_text is extension.is_uuid_text


def python_outcome(event_type: str, record: Any, text_checked: bool = True) -> Event | str:
    """What `to_event` does with the record: its Event, or the reason it refuses it."""
    try:
        return to_event(event_type, record, POSITION, text_checked=text_checked)
    except validation.InvalidEvent as exc:
        return exc.reason
    except Exception as exc:  # what classify dead-letters as unprocessable
        return f"unprocessable ({type(exc).__name__})"


def agrees(event_type: str, record: Any) -> Event | None:
    """The fast path's answer, checked against `to_event`'s; returns it."""
    fast = validation.accept_checked(event_type, record, POSITION)
    slow = python_outcome(event_type, record)
    if fast is not None:
        assert type(fast) is Event and isinstance(slow, Event), (fast, slow)
        assert tuple(fast) == tuple(slow)
        assert [type(value) for value in fast] == [type(value) for value in slow]
    return fast


def decoded(event_type: str, record: dict[str, Any]) -> dict[str, Any]:
    """The record as a consumer gets it: encoded, then read by the compiled decoder."""
    decoded_type, decoded_record, text_checked = registry().decode_checked(registry().encode(event_type, record))
    assert decoded_type == event_type and text_checked
    return decoded_record


@FAST
@given(hostile=hostile_message(WORLD))
def test_on_hostile_messages_it_accepts_only_what_to_event_accepts(hostile: Hostile) -> None:
    try:
        event_type, record, text_checked = registry().decode_checked(hostile.value)
    except DecodeError:
        return
    if not text_checked:
        return  # not asked: `classify` calls the fast path only for what the compiled decoder read
    agrees(event_type, record)
    agrees(event_type, record)  # again, now that to_event has remembered the keys it validated
    validation._VALID_KEYS.clear()  # what to_event remembered must not change the fast path's answer
    agrees(event_type, record)


def test_on_the_messages_that_once_wedged_the_consumers_it_does_not_accept() -> None:
    for hostile in known_wedges(WORLD):
        event_type, record, text_checked = registry().decode_checked(hostile.value)
        if text_checked:
            assert agrees(event_type, record) is None
            assert agrees(event_type, record) is None


class Text(str):
    pass


class Record(dict):
    pass


def _aware_subclass() -> datetime:
    class When(datetime):
        pass
    return When(2024, 5, 1, 12, tzinfo=UTC)


MISSING = object()
EDGE_CHARS = MAX_EDGE_KEY_BYTES // 4
OWNER_CHARS = MAX_OWNER_BYTES // 4
# Paths to the fields to_event checks, by event type (a list index is an item of the list there).
FIELDS = {
    MATERIALIZATION: [("event_id",), ("event_time",), ("run",), ("run", "task_run_id"), ("run", "flow_run_id"),
                      ("asset_key",), ("upstream_keys",), ("upstream_keys", 0), ("properties",),
                      ("properties", "owners"), ("properties", "owners", 0)],
    DEPENDENCY: [("event_id",), ("event_time",), ("run",), ("run", "task_run_id"), ("downstream_key",),
                 ("upstream_key",), ("materialization_event_id",), ("upstream_properties",),
                 ("upstream_properties", "owners"), ("upstream_properties", "owners", 0)],
    METADATA: [("event_id",), ("event_time",), ("run", "flow_run_id"), ("asset_key",),
               ("materialization_event_id",), ("metadata_json",)],
}


def replacements(current: Any) -> st.SearchStrategy[Any]:
    """Values no decoder makes but a record in memory may hold, and values at every limit."""
    fixed: list[Any] = [
        MISSING, None, "", 42, b"bytes", [], {}, (), "not a key", "s3://fast/never-seen-before",
        "0F8FAD5B-D9CB-469F-A165-70867728950E", "0f8fad5b-d9cb-469f-a165-70867728950e",
        datetime(2024, 5, 1, 12), _aware_subclass(), Record(), Record(task_run_id="0f8fad5b-d9cb-469f-a165-70867728950e"),
        ["s3://fast/a"] * 3, ("s3://fast/a",), [1], ["o" * OWNER_CHARS], ["o" * (OWNER_CHARS + 1)],
        ["\U0001F600" * OWNER_CHARS], ["\U0001F600" * (OWNER_CHARS + 1)], [Text("team")],
        "s3://" + "k" * (EDGE_CHARS - 30), "s3://" + "\U0001F600" * 400,
        "[]", "{bad", '{"a": NaN}', '{"a": 1}', '{"n": 123456789012345678901234}', '{"a": "\\u0000"}',
    ]
    if isinstance(current, str):
        fixed += [current.upper(), Text(current), current + "\u0000"]
    if isinstance(current, list):
        fixed += [tuple(current), current + [None]]
    if isinstance(current, dict):
        fixed += [Record(current)]
    return st.sampled_from(fixed)


def replaced(record: dict[str, Any], path: tuple[Any, ...], value: Any) -> dict[str, Any] | None:
    """A deep enough copy of `record` with the value at `path` replaced (MISSING: removed); None when a
    parent on the path is absent."""
    copy = {**record, "run": dict(record["run"])}
    for name in ("properties", "upstream_properties"):
        if isinstance(copy.get(name), dict):
            copy[name] = {**copy[name], "owners": list(copy[name].get("owners") or ["team"])}
    if isinstance(copy.get("upstream_keys"), list):
        copy["upstream_keys"] = list(copy["upstream_keys"]) or ["s3://fast/up"]
    parent: Any = copy
    for step in path[:-1]:
        try:
            parent = parent[step]
        except (KeyError, IndexError, TypeError):
            return None
        if parent is None:
            return None
    last = path[-1]
    if value is MISSING:
        if isinstance(parent, dict):
            parent.pop(last, None)
        else:
            del parent[last]
    else:
        parent[last] = value
    return copy


@FAST
@given(data=st.data(), event_type=st.sampled_from([MATERIALIZATION, DEPENDENCY, METADATA]))
@example(data=None, event_type=MATERIALIZATION)
def test_on_records_changed_in_memory_it_accepts_only_what_to_event_accepts(data: Any, event_type: str) -> None:
    base = decoded(event_type, base_events()[event_type])
    validation._VALID_KEYS.clear()
    assert agrees(event_type, base) is not None  # keys new to to_event too: the fast path checks them itself
    if data is None:
        return
    path = data.draw(st.sampled_from(FIELDS[event_type]))
    current: Any = base
    for step in path:
        current = current[step] if isinstance(current, dict | list) and (
            step in current if isinstance(current, dict) else step < len(current)) else None
    record = replaced(base, path, data.draw(replacements(current)))
    if record is not None:
        agrees(event_type, record)
        agrees(event_type, record)


JSON_SCALARS = (st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.floats(allow_nan=False, allow_infinity=False)
                | st.text(max_size=8))


def deep(levels: int) -> str:
    return '{"a": ' + "[" * (levels - 1) + "]" * (levels - 1) + "}"


@FAST
@given(document=st.recursive(JSON_SCALARS, lambda inner: st.lists(inner, max_size=4)
                             | st.dictionaries(st.text(max_size=6), inner, max_size=4), max_leaves=20),
       spelling=st.sampled_from(["plain", "ascii", "spaced", "big-float", "nan"]))
@example(document={"a": 1}, spelling="plain")
def test_on_metadata_text_it_accepts_only_what_to_event_accepts(document: Any, spelling: str) -> None:
    """Metadata is parsed in C's path by orjson with `to_event`'s own checks; text with a backslash,
    19 digits in a row or anything unusual goes to `_metadata`, which decides."""
    text = {"plain": lambda: json.dumps(document, ensure_ascii=False), "ascii": lambda: json.dumps(document),
            "spaced": lambda: json.dumps(document, indent=1),
            "big-float": lambda: json.dumps({"x": document, "f": 1e308}).replace("1e+308", "1e400"),
            "nan": lambda: json.dumps({"x": document, "f": float("nan")})}[spelling]()
    base = decoded(METADATA, base_events()[METADATA])
    agrees(METADATA, base)
    agrees(METADATA, {**base, "metadata_json": text})


@pytest.mark.parametrize("text", [deep(199), deep(200), deep(201), deep(254), '{"n": 1234567890123456789}',
                                  '{"n": 12345678901234567890}', '{"f": 1.5e308}', '{"s": "a\\u0000b"}', '[1]',
                                  '"text"', "{}", '{"a": "\\"}'])
def test_on_metadata_at_every_limit_it_accepts_only_what_to_event_accepts(text: str) -> None:
    base = decoded(METADATA, base_events()[METADATA])
    agrees(METADATA, base)
    accepted = agrees(METADATA, {**base, "metadata_json": text})
    if text in (deep(199), deep(200), '{"n": 1234567890123456789}', '{"f": 1.5e308}', "{}"):
        assert accepted is not None  # valid, and common: the fast path answers


def test_every_event_of_realistic_task_runs_takes_the_fast_path() -> None:
    """A check that cannot pass by doing nothing: None for every event would fail here."""
    runs = [TaskRun([Asset(f"s3://fast/{i}.csv", props(f"T{i}", owners=["team"]) if i % 2 else None)],
                    [Upstream(f"s3://fast/{i - 1}.csv", "EXPLICIT" if i % 3 else "INFERRED")],
                    metadata={f"s3://fast/{i}.csv": {"rows": i, "tags": ["a", {"b": None}]}} if i % 2 == 0 else {},
                    error=("ValueError", "boom") if i % 5 == 0 else None)
            for i in range(1, 30)]
    records = [(event_type, decoded(event_type, record)) for run in runs for event_type, record in run.events()]
    validation._VALID_KEYS.clear()  # keys seen for the first time: the fast path checks them itself
    answers = [agrees(event_type, record) for event_type, record in records]
    assert {event.event_type for event in answers if event is not None} == {MATERIALIZATION, DEPENDENCY, METADATA}
    assert all(answer is not None for answer in answers)


# Characters around each part of the key rule (schemas/keys.py): the scheme's [a-z0-9] and what is near it
# (upper case, other digits, "-", "+", "."), its "://", the restricted characters, and other Unicode.
KEY_CHARACTERS = "az09AZ-+.:/_\u00e9\u0660\U0001F600" + "".join(RESTRICTED_ASSET_CHARACTERS)


@st.composite
def key_like(draw) -> str:
    """Mostly near-valid keys: a scheme, "://" (sometimes changed), then a path that may hold any
    KEY_CHARACTERS, at lengths around the 512-character limit."""
    scheme = draw(st.text("abcxyz0189", min_size=0, max_size=6) | st.text(KEY_CHARACTERS, max_size=4))
    separator = draw(st.sampled_from(["://", "://", "://", ":/", ":", "//", ":///", ""]))
    path = draw(st.text(st.sampled_from("abcdef/._-") | st.sampled_from(KEY_CHARACTERS), max_size=12))
    padding = draw(st.sampled_from([0, 0, 0, 490, 500, 505, 506, 507, 600]))
    key = scheme + separator + "p" * max(0, padding - len(scheme) - len(separator)) + path
    return key[:draw(st.sampled_from([len(key), 511, 512, 513]))]


def valid_by_the_rule(key: str) -> bool:
    try:
        validate_asset_key(key)
    except ValueError:
        return False
    return True


@FAST
@given(key=key_like() | st.text(KEY_CHARACTERS, max_size=20),
       place=st.sampled_from([(MATERIALIZATION, "asset_key"), (MATERIALIZATION, ("upstream_keys", 0)),
                              (DEPENDENCY, "downstream_key"), (DEPENDENCY, "upstream_key"), (METADATA, "asset_key")]))
@example(key="s3://b/x", place=(MATERIALIZATION, "asset_key"))
@example(key="s3://" + "p" * 507, place=(MATERIALIZATION, "asset_key"))
@example(key="s3://" + "p" * 508, place=(MATERIALIZATION, "asset_key"))
@example(key="S3://b/x", place=(METADATA, "asset_key"))
@example(key="s\u00e9://b/x", place=(METADATA, "asset_key"))
@example(key="s3://b x", place=(DEPENDENCY, "upstream_key"))
def test_keys_it_has_never_seen_are_accepted_exactly_when_the_key_rule_accepts_them(key: str, place: Any) -> None:
    """The fast path checks each key itself (a cache of validated keys forgets them at a million assets):
    with nothing remembered, a key the rule accepts is accepted at once, one it refuses never is."""
    event_type, field = place
    record = decoded(event_type, base_events()[event_type])
    path = field if isinstance(field, tuple) else (field,)
    changed = replaced(record, path, key)
    assert changed is not None
    validation._VALID_KEYS.clear()
    accepted = agrees(event_type, changed)
    edge_chars = len(key) + len(changed.get("upstream_key", "") if field == "downstream_key" else
                                changed.get("downstream_key", ""))
    if valid_by_the_rule(key) and (event_type != DEPENDENCY or edge_chars <= EDGE_CHARS):
        assert accepted is not None
    elif not valid_by_the_rule(key):
        assert accepted is None


UUID_LOOKALIKES = "0123456789abcdefABCDEF-gG x\u00e9\u0660\uff10\n"  # Arabic-Indic and fullwidth digits are not [0-9]


@st.composite
def uuid_like(draw) -> str:
    """UUID text, sometimes upper case, with up to two characters changed, added or removed."""
    chars = list(str(draw(st.uuids())))
    if draw(st.booleans()):
        chars = [c.upper() for c in chars]
    for _ in range(draw(st.integers(0, 2))):
        at = draw(st.integers(0, len(chars) - 1))
        how = draw(st.sampled_from(["set", "insert", "delete"]))
        if how == "delete":
            del chars[at]
        else:
            chars[at:at + (how == "set")] = [draw(st.sampled_from(UUID_LOOKALIKES))]
    return "".join(chars)


@FAST
@given(value=uuid_like() | st.text(max_size=40) | st.text(UUID_LOOKALIKES, min_size=36, max_size=36))
@example(value="0f8fad5b-d9cb-469f-a165-70867728950e")
@example(value="0F8FAD5B-D9CB-469F-A165-70867728950E")
@example(value="0f8fad5b-d9cb-469f-a165-70867728950\u0660")
@example(value="0f8fad5bd9cb469fa16570867728950e")
def test_the_c_uuid_check_decides_as_the_rule_regex(value):
    """Validation's UUID check (`_UUID_TEXT`, the rule) is made in C where the extension is built."""
    assert validation._is_uuid_text(value) is bool(_UUID_TEXT.fullmatch(value))
    assert validation._is_uuid_text(Text(value)) is bool(_UUID_TEXT.fullmatch(value))
