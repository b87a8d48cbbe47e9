"""Validation of OpenLineage events against the spec's JSON schemas, vendored in `spec/`.

The schemas are looked up by their `$id` (never fetched): an event is checked
against the spec version its `schemaURL` names (1-0-x -> 1-0-5, anything else
-> 2-0-2), and each facet against its own `_schemaURL` when that exact facet
version is vendored; a facet whose schema is not known is kept as JSON
unchecked. Failures raise `InvalidOpenLineage` with one line saying where and why.

Two validators, one decision: `jsonschema_rs` (compiled once per schema, a few
microseconds an event) accepts what is valid; anything it refuses is checked
again by `jsonschema`, which decides and words the reason. So a refusal and its
message are exactly `jsonschema`'s, and the fast path only ever answers "valid"
(`tests/test_openlineage_validation.py` checks both agree on mutated events).
Spec 1-0-5 refers to facet files by relative paths that are not vendored, so its
events are checked by `jsonschema` alone, as before.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator, Mapping
from functools import cache
from importlib import resources
from typing import Any

SPEC_2 = "https://openlineage.io/spec/2-0-2/OpenLineage.json"
SPEC_1 = "https://openlineage.io/spec/1-0-5/OpenLineage.json"
_MAJOR_1 = re.compile(r"/spec/1-\d+-\d+/")


class InvalidOpenLineage(ValueError):
    """An event Assetlog will not accept; the message is the reason a client is told."""


@cache
def _schemas() -> dict[str, Any]:
    found: dict[str, Any] = {}
    for entry in resources.files(__package__).joinpath("spec").iterdir():
        if entry.name.endswith(".json"):
            contents = json.loads(entry.read_text(encoding="utf-8"))
            found[contents["$id"]] = contents
    return found


@cache
def _registry() -> Any:
    # deferred: referencing, which jsonschema brings (the optional `openlineage` extra)
    from referencing import Registry, Resource
    from referencing.jsonschema import DRAFT202012

    return Registry().with_resources(
        (uri, Resource.from_contents(contents, default_specification=DRAFT202012))
        for uri, contents in _schemas().items()
    )


@cache
def _validator(ref: str) -> Any:
    # deferred: jsonschema, the optional `openlineage` extra
    from jsonschema import Draft202012Validator

    return Draft202012Validator({"$ref": ref}, registry=_registry())


@cache
def _fast_registry() -> Any:
    # deferred: jsonschema_rs, the optional `openlineage` extra
    import jsonschema_rs

    return jsonschema_rs.Registry([(uri, contents) for uri, contents in _schemas().items() if uri != SPEC_1])


@cache
def _fast_validator(ref: str) -> Any:
    """The compiled validator of `ref`, or None where only `jsonschema` checks (spec 1-0-5, or
    `jsonschema_rs` not installed); formats are not checked, as `jsonschema` does not by default."""
    if ref.split("#", 1)[0] == SPEC_1:
        return None
    try:
        # deferred: jsonschema_rs, the optional `openlineage` extra
        import jsonschema_rs
    except ImportError:
        return None
    try:
        return jsonschema_rs.Draft202012Validator({"$ref": ref}, registry=_fast_registry(), validate_formats=False)
    except Exception:  # e.g. a fragment the document does not have: `jsonschema` says what is wrong
        return None


def known_schema(url: str) -> bool:
    """True when the schema document `url` points into is vendored."""
    return url.split("#", 1)[0] in _schemas()


def event_kind(event: Mapping[str, Any]) -> str:
    """RunEvent, DatasetEvent or JobEvent, by the fields the spec requires of each."""
    if "run" in event:
        return "RunEvent"
    if "dataset" in event:
        return "DatasetEvent"
    if "job" in event:
        return "JobEvent"
    raise InvalidOpenLineage("not an OpenLineage event: it has none of 'run', 'job', 'dataset'")


def spec_for(event: Mapping[str, Any]) -> str:
    url = event.get("schemaURL")
    return SPEC_1 if isinstance(url, str) and _MAJOR_1.search(url) else SPEC_2


def validate_event(event: Any) -> str:
    """Check `event` against its spec version and its known facets; returns its kind."""
    if not isinstance(event, dict):
        raise InvalidOpenLineage(f"an OpenLineage event is a JSON object, got {type(event).__name__}")
    kind = event_kind(event)
    spec = spec_for(event)
    if spec == SPEC_1 and kind != "RunEvent":
        raise InvalidOpenLineage(f"{kind} needs spec 2-0-x; the event names {event.get('schemaURL')!r}")
    _check(f"{spec}#/$defs/{kind}", event, "event")
    for where, facet in _facets(event):
        url = facet.get("_schemaURL")
        if isinstance(url, str) and known_schema(url):
            _check(url if "#" in url else url + "#", facet, where)
    return kind


def _check(ref: str, instance: Any, where: str) -> None:
    # deferred: jsonschema, the optional `openlineage` extra
    from jsonschema.exceptions import best_match
    from referencing.exceptions import Unresolvable

    fast = _fast_validator(ref)
    try:
        if fast is not None and fast.is_valid(instance):
            return
    except Exception:  # a value it cannot take (e.g. an integer beyond 64 bits): `jsonschema` decides
        pass
    try:
        error = best_match(_validator(ref).iter_errors(instance))
    except Unresolvable as exc:  # a `_schemaURL` fragment the document lacks, a reference not vendored
        raise InvalidOpenLineage(f"{where}: cannot check it against {ref} ({type(exc).__name__})") from None
    if error is None:
        return
    path = "".join(f"[{p!r}]" if isinstance(p, int) else f".{p}" for p in error.absolute_path)
    message = error.message if len(error.message) <= 300 else error.message[:299] + "\u2026"
    raise InvalidOpenLineage(f"{where}{path}: {message}")


def _facets(event: Mapping[str, Any]) -> Iterator[tuple[str, Mapping[str, Any]]]:
    """(where, facet) for every facet of the event that is an object."""
    holders: list[tuple[str, Any]] = [("run.facets", (event.get("run") or {}).get("facets")),
                                      ("job.facets", (event.get("job") or {}).get("facets"))]
    if isinstance(event.get("dataset"), dict):
        holders.append(("dataset.facets", event["dataset"].get("facets")))
    for side, extra in (("inputs", "inputFacets"), ("outputs", "outputFacets")):
        for index, dataset in enumerate(event.get(side) or ()):
            if isinstance(dataset, dict):
                holders.append((f"{side}[{index}].facets", dataset.get("facets")))
                holders.append((f"{side}[{index}].{extra}", dataset.get(extra)))
    for where, facets in holders:
        if isinstance(facets, dict):
            for name, facet in facets.items():
                if isinstance(facet, dict):
                    yield f"{where}.{name}", facet
